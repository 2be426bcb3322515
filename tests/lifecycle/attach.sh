#!/usr/bin/env bash
# udev attach under systemd as PID 1 (tests/vm/run --systemd --qmp auto, host hook
# attach.host): a dmbyok disk hot-plugged through QMP is attached by udev's rule and
# dmbyok-attach@.service, with and without dmbyokd, and mounted when fstab says so; its
# unplug removes the mapping; plain LUKS and ext4 disks are ignored; an operator's `dmbyok
# open` racing udev's attach ends with one mapping.
. "$(dirname "$0")/lib.sh"
[ "$(cat /proc/1/comm)" = systemd ] || fail "run with tests/vm/run --systemd"
disks() { for d in /sys/block/vd*; do [ -e "$d" ] && echo "${d##*/}"; done; return 0; }
# plug ID IMAGE [KIND]: asks the host for the disk; prints its /dev node once udev has it.
plug() {
	local before new
	before=$(disks)
	echo "PLUG $*" >&2 # the console: stdout is the caller's
	for _ in $(seq 300); do
		new=$(comm -13 <(echo "$before") <(disks) | head -n 1)
		[ -n "$new" ] && udevadm settle --timeout=30 && { echo "/dev/$new"; return 0; }
		sleep 0.1
	done
	fail "disk $1 never appeared"
}
unplug() { # unplug ID DEV
	echo "UNPLUG $1"
	wait_quietly 60 test ! -e "$2" || fail "$2 never went away"
}
attached_in() { wait_for "$1" eval "[ -b /dev/mapper/$2 ] && [ \"\$(state $2)\" = active ]"; }

step "set-up: KMS, units and udev rule as shipped, a volume on a disk, in the table"
start_kms
KEY=$(create_key alias/hot)
install_units
printf 'check-interval = 2\n' >/etc/dmbyok/dmbyokd.conf
# The volume's own on-revoke hook, named in the table (it only records its call).
printf '#!/bin/sh\necho "$1 $2" >>%s/hook.log\n' "$WORK" >"$WORK/hook"
chmod 0755 "$WORK/hook"
dev=$(plug hp0 hot)
check "format $dev" $DMBYOK format "$dev" --key alias/hot --quiet
check "udev sees the LUKS2 subsystem label (ID_FS_SUBSYSTEM=dmbyok)" \
	bash -c "udevadm info --query=property '$dev' | grep -qx ID_FS_SUBSYSTEM=dmbyok"
echo "udev's blkid builtin alone: $(udevadm test-builtin blkid "/sys/class/block/${dev#/dev/}" 2>/dev/null | grep -c '^ID_FS_SUBSYSTEM=dmbyok' || true) ID_FS_SUBSYSTEM=dmbyok line(s) (0: the rule's blkid -p import supplies it)"
uuid=$(blkid -s UUID -o value "$dev")
check "the volumes table takes it" $DMBYOK volumes add hot "UUID=$uuid" "on-revoke=$WORK/hook" --quiet
check "and refuses a bad line, naming why, leaving the table as it was" \
	bash -c "! $DMBYOK volumes add 'bad name' /dev/null 2>/dev/null && [ \$(grep -c . /etc/dmbyok/volumes) -eq 1 ]"
mkdir -p /srv/hot
mkfs_done=0
unplug hp0 "$dev"

step "hot-plug without the agent: dmbyok-attach@ attaches it itself"
dev=$(plug hp1 hot)
t=$(attached_in 60 hot) || { systemctl status "dmbyok-attach@${dev#/dev/}" --no-pager; fail "not attached"; }
echo "hot-plug -> /dev/mapper/hot in $t s (no agent)"
check "by dmbyok-attach@${dev#/dev/}.service" systemctl is-active --quiet "dmbyok-attach@${dev#/dev/}.service"
mkfs.ext4 -q /dev/mapper/hot
echo "/dev/mapper/hot /srv/hot ext4 nofail,x-systemd.wanted-by=dev-mapper-hot.device 0 2" >>/etc/fstab
systemctl daemon-reload
mount /srv/hot && echo kept >/srv/hot/data && sync && umount /srv/hot

step "unplug: the mapping goes with the disk"
unplug hp1 "$dev"
t=$(wait_for 60 test ! -e /dev/mapper/hot) || { dmsetup ls; fail "mapping left over a vanished disk"; }
echo "unplug -> mapping gone in $t s"
# detach removes the mapping first, then its record: poll.
check "its record is forgotten" wait_quietly 30 test ! -e "$DMBYOK_RUNTIME_DIR/mappings/hot.json"

step "hot-plug with dmbyokd running: it attaches, and fstab's mount follows"
check "dmbyokd starts" systemctl start dmbyokd.service
dev=$(plug hp2 hot)
t=$(attached_in 60 hot) || { journalctl -u dmbyokd --no-pager | tail -20; fail "not attached"; }
echo "hot-plug -> /dev/mapper/hot in $t s (agent)"
# The agent logs the attach, records it and adopts the mapping (a rescan) once its attach
# process has exited, after the mapping is there: poll.
check "the agent did it (its journal)" wait_quietly 60 bash -c "journalctl -u dmbyokd --no-pager | grep -q 'Attached hot'"
t=$(wait_for 60 mountpoint -q /srv/hot) || fail "fstab's mount did not follow the attach"
echo "attach -> mounted in $t s"
check "the data is there" test "$(cat /srv/hot/data)" = kept
check "the agent watches it" wait_quietly 60 bash -c "[ \"\$($DMBYOK status hot --json | jq -r .agent.state)\" = active ]"
check "dmbyok volumes shows it attached" wait_quietly 60 bash -c "$DMBYOK volumes --json | jq -e '.[0].state == \"attached\" and .[0].agent == \"attached\"'"

step "its key revoked while it is mounted: the volume's own on-revoke hook runs"
kms_as customer DisableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
t=$(wait_for 60 grep -q "revoke hot" "$WORK/hook.log") || { journalctl -u dmbyokd --no-pager | tail -20; fail "no hook"; }
echo "revocation -> the table's on-revoke hook for hot ran in $t s"
check "hot is locked (still mounted, so not torn down yet)" test "$(state hot)" = locked
kms_as customer EnableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
check "the key back: hot is active again" wait_quietly 60 eval "[ \"\$(state hot)\" = active ]"
umount /srv/hot
# From here on, attaching must not mount it (the races below close it again and again).
sed -i '\|/srv/hot|d' /etc/fstab
systemctl daemon-reload

step "racing: udev's attach, the agent and an operator's open on one disk end with one mapping"
for round in 1 2 3 4 5; do
	$DMBYOK close hot --quiet
	systemctl restart "dmbyok-attach@${dev#/dev/}.service" & p1=$!
	$DMBYOK attach "$dev" --quiet & p2=$!
	$DMBYOK open "$dev" "other$round" --quiet 2>/dev/null & p3=$!
	wait $p1 $p2 || true
	wait $p3 || true # the loser of the race fails: busy or already attached
	wait_quietly 60 eval "[ \$(mappings_of $dev) -ge 1 ]" || fail "round $round: nothing attached"
	sleep 1
	n=$(mappings_of "$dev")
	[ "$n" -eq 1 ] || { dmsetup ls; fail "round $round: $n mappings over $dev"; }
	held=$(ls "/sys/class/block/${dev#/dev/}/holders")
	echo "round $round: one mapping ($(cat /sys/block/$held/dm/name))"
	$DMBYOK close "$(cat /sys/block/$held/dm/name)" --quiet
	$DMBYOK attach "$dev" --quiet
	wait_quietly 60 test -b /dev/mapper/hot || fail "round $round: not re-attached"
done
ok "5 rounds, one mapping each"

step "plain LUKS and ext4 disks are ignored"
p1=$(plug hp3 plainluks luks)
p2=$(plug hp4 plainext4 ext4)
sleep 2
check "no attach unit for them" bash -c "! systemctl list-units --all --plain --no-legend 'dmbyok-attach@*' | grep -Eq '${p1#/dev/}|${p2#/dev/}'"
check "no mapping over them" test "$(mappings_of "$p1")$(mappings_of "$p2")" = 00
unplug hp3 "$p1"
unplug hp4 "$p2"
unplug hp2 "$dev"
wait_quietly 60 test ! -e /dev/mapper/hot || fail "mapping left after the last unplug"
echo "HOOK-DONE x"
systemctl stop dmbyokd.service
stop_kms
finish
