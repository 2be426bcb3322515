#!/usr/bin/env bash
# Guest side of hidden-paths.host: the host paths it was given are visible at the same
# paths and read-only; the rest of the host's /tmp is not; /tmp, /var/tmp, /run are writable.
set -euo pipefail

die() { echo "FAIL: $*" >&2; exit 1; }

[ "$(pwd -P)" = "$EXPECT_CWD" ] || die "cwd is $(pwd -P), want $EXPECT_CWD"
[ -r "$EXPECT_CWD/../a dir/guest.sh" ] || die "the script's own directory is not visible"
[ "$(cat "$DATA")" = var-tmp-data ] || die "--env path $DATA under /var/tmp is not visible"
[ "$(cat "$1")" = run-data ] || die "argument path $1 under /run is not visible"
[ -d "$LINKED" ] || die "$LINKED (through a symlink under /tmp) is not visible"
[ -r "$VM_RUN_DIR/env" ] || die "the run directory $VM_RUN_DIR is not visible"
[ ! -e "/tmp/$SECRET_NAME" ] || die "the rest of the host's /tmp leaks into the guest"
if touch "$EXPECT_CWD/write-test" 2>/dev/null; then
	die "the host's $EXPECT_CWD is writable in the guest"
fi
for d in /tmp /var/tmp /run; do
	echo x >"$d/dmbyok-write-test" || die "$d is not writable"
done
[ -x /run/dmbyok/guest-run ] || [ "$VM_MODE" = systemd ] || die "/run/dmbyok/guest-run is missing"
echo "hidden paths ($VM_MODE): ok"
