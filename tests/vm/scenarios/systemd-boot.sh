#!/usr/bin/env bash
# Proves --systemd: systemd is PID 1, the script runs in a unit, udev runs, the root is a
# writable overlay; and --prepare: what systemd-prepare.sh set up before the boot (an fstab
# mount, an enabled unit) took effect during it.
# Run: tests/vm/run systemd-boot.sh --systemd --disk 16M --prepare systemd-prepare.sh
set -euo pipefail

die() { echo "FAIL: $*" >&2; exit 1; }

[ "$(cat /proc/1/comm)" = systemd ] || die "PID 1 is $(cat /proc/1/comm), not systemd"
[ "$VM_MODE" = systemd ] || die "VM_MODE is $VM_MODE"
unit=$(systemctl show -P Id "$(cut -d: -f3 /proc/self/cgroup | sed 's|.*/||')" 2>/dev/null || true)
echo "running in unit: $unit"
[ "$unit" = dmbyok-test.service ] || die "the script does not run in dmbyok-test.service"
state=$(systemctl is-system-running || true)
echo "system state: $state"
systemctl is-active --quiet systemd-udevd.service || die "systemd-udevd.service is not active"
systemctl is-active --quiet systemd-journald.service || die "systemd-journald.service is not active"
[ -z "${DM_DISABLE_UDEV:-}" ] || die "DM_DISABLE_UDEV is set under systemd"
udevadm settle --timeout=30
links=(/dev/disk/by-path/*virtio*)
[ -L "${links[0]}" ] || die "udev made no /dev/disk/by-path link for the virtio disk"
touch /etc/dmbyok-overlay-write-test || die "the root overlay is not writable"
mountpoint -q /srv/prepared || die "the fstab line written by --prepare was not mounted at boot"
# WantedBy=basic.target: it may still be starting beside this unit.
for _ in $(seq 600); do systemctl is-active --quiet prepared.service && break; sleep 0.1; done
systemctl is-active --quiet prepared.service || die "the unit enabled by --prepare did not start at boot"
[ "$(cat /srv/prepared/proof)" = booted ] || die "prepared.service did not run after its mount"
echo "failed units: $(systemctl list-units --failed --plain --no-legend | awk '{ print $1 }' | tr '\n' ' ')"
echo "systemd boot: ok"
