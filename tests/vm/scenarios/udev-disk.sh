#!/usr/bin/env bash
# Proves --udev: systemd-udevd runs (no systemd PID 1), sees the virtio disk, and the
# device mapper cooperates with it. Run: tests/vm/run udev-disk.sh --udev --disk 16M
set -euo pipefail

die() { echo "FAIL: $*" >&2; exit 1; }

[ -z "${DM_DISABLE_UDEV:-}" ] || die "DM_DISABLE_UDEV is set under --udev"
pgrep -x systemd-udevd >/dev/null || die "systemd-udevd is not running"
disk=${VM_DISKS%% *}
[ -b "$disk" ] || die "no disk attached (run with --disk 16M)"
udevadm info --query=property --name="$disk" | grep -q '^ID_PATH=' || die "udev has no ID_PATH for $disk"
links=(/dev/disk/by-path/*virtio*)
[ -L "${links[0]}" ] || die "udev made no /dev/disk/by-path link for $disk"

# A dm device made through libdevmapper's udev synchronisation gets its udev symlinks.
sectors=$(blockdev --getsz "$disk")
dmsetup create udevtest --table "0 $sectors linear $disk 0"
udevadm settle --timeout=30
[ -L /dev/disk/by-id/dm-name-udevtest ] || die "udev made no /dev/disk/by-id/dm-name-udevtest"
dmsetup remove udevtest
udevadm settle --timeout=30
[ ! -e /dev/mapper/udevtest ] || die "/dev/mapper/udevtest still exists after remove"
echo "udev disk: ok"
