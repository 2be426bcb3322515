#!/usr/bin/env bash
# The --prepare half of boot.sh, chrooted into the guest's overlay before systemd starts
# (tests/vm/run --prepare): eight dmbyok volumes with ext4 on them, the volumes table, fstab
# mounts in the documented form, dmbyok's Debian package installed with dpkg -i (its postinst
# enables dmbyokd), an
# application ordered after the mounts, and the KMS emulator as a unit that starts with the
# boot ("normal") or not ("kms-down", where key R is also revoked before the boot).
. "$(dirname "$0")/lib.sh"
mode=${1:?normal|kms-down}
timeout=180s
[ "$mode" = kms-down ] && timeout=20s
KMS_LISTEN=127.0.0.1:4599
start_kms
KEY=$(create_key alias/data)
KEY_R=$(create_key alias/revoked)
: >/etc/dmbyok/volumes 2>/dev/null || { mkdir -p /etc/dmbyok; : >/etc/dmbyok/volumes; }
i=0
for dev in $VM_DISKS; do
	i=$((i + 1))
	key=alias/data
	[ "$i" -eq 8 ] && key=alias/revoked
	$DMBYOK format "$dev" --key "$key" --quiet || fail "format $dev"
	$DMBYOK open "$dev" "v$i" --quiet || fail "open $dev"
	mkfs.ext4 -q -E nodiscard "/dev/mapper/v$i" && mkdir -p "/srv/v$i" || fail "mkfs v$i"
	mount "/dev/mapper/v$i" "/srv/v$i" && echo "volume $i" >"/srv/v$i/id" && umount "/srv/v$i"
	$DMBYOK close "v$i" --quiet
	opts=-
	[ "$i" -eq 8 ] && opts=nofail
	DMBYOK_VOLUMES=/etc/dmbyok/volumes $DMBYOK volumes add "v$i" "UUID=$(blkid -s UUID -o value "$dev")" "$opts" --quiet
	# The documented fstab line (docs/volumes.md): after the network, never failing the boot,
	# mounted whenever the volume attaches.
	# (The device timeout counts from the start of the boot: generous here, where the boot
	# itself is slow under TCG; short with the KMS down, where the wait is the point.)
	echo "/dev/mapper/v$i /srv/v$i ext4 _netdev,nofail,x-systemd.after=dmbyokd.service,x-systemd.device-timeout=$timeout,x-systemd.wanted-by=dev-mapper-v$i.device 0 2" >>/etc/fstab
done
[ "$mode" = kms-down ] && kms_as customer DisableKey "{\"KeyId\":\"$KEY_R\"}" >/dev/null
stop_kms

install_package
printf 'check-interval = 2\nattach-timeout = 15\n' >/etc/dmbyok/dmbyokd.conf
[ "$(systemctl is-enabled dmbyokd.service)" = enabled ] || fail "the package did not enable dmbyokd"
# The customer's KMS, on this guest's loopback.
cat >/etc/systemd/system/kms-emulator.service <<UNIT
[Unit]
Description=AWS KMS emulator (the customer's KMS, for this test)
Before=dmbyokd.service
[Service]
ExecStart=$EMULATOR --listen $KMS_LISTEN --state $WORK/kms.json --audit-log $WORK/audit.log
[Install]
WantedBy=multi-user.target
UNIT
[ "$mode" = normal ] && systemctl enable kms-emulator.service >/dev/null 2>&1
# The application: needs every volume's file system.
cat >/etc/systemd/system/app.service <<UNIT
[Unit]
Description=An application on the dmbyok volumes
RequiresMountsFor=$(printf '/srv/v%s ' 1 2 3 4 5 6 7)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'cat /srv/v*/id > $WORK/app-saw'
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable app.service >/dev/null 2>&1
# The test boot reaches multi-user.target as a real one would; what the host image enables
# there and is unrelated to dmbyok is left out.
mkdir -p /etc/systemd/system/dmbyok.target.d
printf '[Unit]\nWants=multi-user.target\n' >/etc/systemd/system/dmbyok.target.d/boot.conf
for u in postgresql.service e2scrub_reap.service; do ln -sf /dev/null "/etc/systemd/system/$u"; done
echo "prepared: ${i} volumes, mode $mode"
