#!/usr/bin/env bash
# With systemd-udevd running, as on a real host: dmbyok's table loads, suspends, resumes and
# removals synchronise with udev (libdevmapper cookies) instead of hanging, udev makes the
# /dev/mapper and by-id links, and cryptsetup's udev rules see a LUKS2 crypt mapping.
. "$(dirname "$0")/lib.sh"
DISK=/dev/vda

[ -z "${DM_DISABLE_UDEV:-}" ] || fail "run with --udev: DM_DISABLE_UDEV is set"
check "systemd-udevd runs" pgrep -x systemd-udevd

step "format, open, lock, unlock, close with udev"
start_kms
create_key alias/udev >/dev/null
check "format" $DMBYOK format $DISK --key alias/udev
# udev learns of the new header from its inotify watch (a change event it makes itself on the
# close after format's writes): settle alone may return before that event is queued.
check "udev sees the dmbyok header (crypto_LUKS)" \
	wait_quietly 60 bash -c "udevadm settle; udevadm info --query=property --name=$DISK | grep -qx 'ID_FS_TYPE=crypto_LUKS'"
check "open returns (udev cookie released)" timeout 60 $DMBYOK open $DISK data
check "/dev/mapper/data exists" test -b /dev/mapper/data
check "udev made the by-id link for the dm UUID" \
	bash -c "udevadm settle; ls /dev/disk/by-id/ | grep -q '^dm-uuid-CRYPT-LUKS2-.*-data$'"
check "lock returns" timeout 60 $DMBYOK lock data
check "status says locked" test "$($DMBYOK status data --json | jq -r .state)" = locked
check "unlock returns" timeout 60 $DMBYOK unlock data
check "status says active" test "$($DMBYOK status data --json | jq -r .state)" = active
check "close returns" timeout 60 $DMBYOK close data
check "the node is gone" bash -c "udevadm settle; test ! -e /dev/mapper/data"
stop_kms
finish
