#!/usr/bin/env bash
# Proves --qmp with a host hook: the guest asks for a disk on its console, the host hook
# (qmp-hotplug.host) hot-plugs one through QMP, the guest sees a new /dev/vdX, then asks
# for and sees its removal.
# Run: tests/vm/run qmp-hotplug.sh --qmp auto --host-hook .../qmp-hotplug.host
set -euo pipefail

die() { echo "FAIL: $*" >&2; exit 1; }
disks() { # the virtio disks, one name a line
	local d
	for d in /sys/block/vd*; do [ -e "$d" ] && echo "${d##*/}"; done
	return 0
}

wait_for() { # SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds
	local n=$(($1 * 10)) what=$2
	shift 2
	until "$@"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || die "timed out waiting for $what"
		sleep 0.1
	done
}

before=$(disks)
echo "disks before: ${before:-none}"
echo "HOTPLUG-REQUEST"
new_disk() { [ -n "$(comm -13 <(echo "$before") <(disks))" ]; }
wait_for 60 "a hot-plugged disk" new_disk
dev=/dev/$(comm -13 <(echo "$before") <(disks) | head -n 1)
wait_for 10 "$dev" test -b "$dev"
size=$(blockdev --getsize64 "$dev")
echo "hot-plugged: $dev, $size bytes"
[ "$size" -eq $((32 * 1024 * 1024)) ] || die "$dev has $size bytes, expected 32 MiB"
echo hello | dd of="$dev" bs=512 conv=sync,fsync status=none
[ "$(head -c 5 "$dev")" = hello ] || die "cannot read back what was written to $dev"

echo "UNPLUG-REQUEST"
wait_for 60 "$dev to go away" test ! -e "$dev"
echo "unplugged: $dev"
echo "qmp hotplug: ok"
