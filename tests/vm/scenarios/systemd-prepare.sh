#!/usr/bin/env bash
# The --prepare half of systemd-boot.sh: runs chrooted into the guest's overlay before
# systemd starts, and sets up what the boot must act on: an ext4 file system on the disk
# with its fstab line, and a unit enabled the way a package's postinst would.
set -euo pipefail
die() { echo "FAIL: $*" >&2; exit 1; }

[ "$(cat /proc/1/comm)" != systemd ] || die "--prepare ran under systemd, not before it"
[ "${DM_DISABLE_UDEV:-}" = 1 ] || die "DM_DISABLE_UDEV is not set for --prepare"
disk=${VM_DISKS%% *}
mkfs.ext4 -q -L prepared "$disk" || die "mkfs.ext4 $disk"
mkdir -p /srv/prepared
echo "LABEL=prepared /srv/prepared ext4 defaults 0 2" >>/etc/fstab
cat >/etc/systemd/system/prepared.service <<'UNIT'
[Unit]
Description=A unit enabled before the boot
RequiresMountsFor=/srv/prepared
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo booted >/srv/prepared/proof'
[Install]
WantedBy=basic.target
UNIT
systemctl enable prepared.service || die "systemctl enable (offline) failed"
echo "prepared: ext4 on $disk in fstab, prepared.service enabled"
