#!/usr/bin/env bash
# Boot-time attach under systemd as PID 1, on what boot-prepare.sh set up before the boot
# (the bounds below are for correctness under a loaded TCG guest; times are printed, and
# bench/run attach measures them):
#   normal:   dmbyokd attaches the eight volumes of /etc/dmbyok/volumes, says READY, fstab
#             mounts them and the application starts after them; nothing failed.
#   kms-down: the boot completes anyway (READY after attach-timeout), the volumes wait for
#             the KMS and attach within seconds of its return; the one whose key is revoked
#             stays unattached, with a clear status, and holds nothing.
. "$(dirname "$0")/lib.sh"
mode=${1:?normal|kms-down}
[ "$(cat /proc/1/comm)" = systemd ] || fail "run with tests/vm/run --systemd"
KMS_URL=http://127.0.0.1:4599
mono() { systemctl show -P "$2" "$1"; } # a unit's monotonic timestamp, in microseconds

# The boot is done when no job is left but this test's own (and its target's, which waits
# for it).
boot_done() { [ "$(systemctl list-jobs --no-legend | grep -v -c -e dmbyok-test.service -e 'dmbyok\.target')" -eq 0 ]; }
t=$(wait_for 300 boot_done) || { systemctl list-jobs --no-pager; fail "the boot did not finish"; }
echo "boot jobs done $t s after the test started; dmbyokd: $(systemctl show -P StatusText dmbyokd)"
check "dmbyokd is active (READY)" systemctl is-active --quiet dmbyokd.service

if [ "$mode" = normal ]; then
	step "every volume attached, mounted, the application after them"
	for i in 1 2 3 4 5 6 7 8; do
		[ "$(state "v$i")" = active ] || fail "v$i is $(state "v$i")"
		mountpoint -q "/srv/v$i" || fail "/srv/v$i is not mounted"
		[ "$(cat "/srv/v$i/id")" = "volume $i" ] || fail "/srv/v$i has the wrong data"
	done
	ok "8 volumes active and mounted"
	check "the application ran" systemctl is-active --quiet app.service
	for i in 1 2 3 4 5 6 7; do
		[ "$(mono app.service ExecMainStartTimestampMonotonic)" -gt "$(mono "srv-v$i.mount" ActiveEnterTimestampMonotonic)" ] ||
			fail "app.service started before /srv/v$i was mounted"
	done
	ok "the application started after every mount"
	ready=$(mono dmbyokd.service ActiveEnterTimestampMonotonic)
	start=$(mono dmbyokd.service ExecMainStartTimestampMonotonic)
	echo "dmbyokd: start -> READY with 8 volumes attached: $(((ready - start) / 1000)) ms"
	echo "--- dmbyokd and the KMS emulator at boot (monotonic time)"
	journalctl -u dmbyokd -u kms-emulator -o short-monotonic --no-pager | head -30
	check "no unit failed" test -z "$(systemctl list-units --failed --plain --no-legend)"
	check "the KMS saw the unwraps (at least one Decrypt per volume)" \
		test "$(jq -r 'select(.operation == "Decrypt") | .operation' "$WORK/audit.log" | wc -l)" -ge 8
else
	step "the KMS is down: the boot went on, the volumes wait for it"
	check "the application did not start without its volumes" bash -c "! systemctl is-active --quiet app.service"
	check "no unit failed but the application's mounts' dependents" \
		bash -c "! systemctl list-units --failed --plain --no-legend | grep -v -e '^app.service' -e 'srv-v' | grep -q ."
	# (A retry pass may be running: "attaching" is the same wait.)
	check "dmbyok volumes says waiting for the KMS" \
		bash -c "$DMBYOK volumes --json | jq -e '[.[] | select(.agent == \"waiting-for-kms\" or .agent == \"attaching\")] | length == 8'"
	$DMBYOK volumes
	step "the KMS comes up: seven attach within seconds, the revoked one does not"
	systemctl start kms-emulator.service
	# From when it answers: its start under TCG (Python, its crypto) is not ours to time.
	t=$(wait_for 120 curl -s -o /dev/null "$KMS_URL/") || fail "the KMS emulator did not come up"
	echo "the KMS emulator answers $t s after its start"
	t=$(wait_for 180 eval '[ "$(for i in 1 2 3 4 5 6 7; do state v$i; done | grep -c active)" -eq 7 ]') ||
		{ $DMBYOK volumes; journalctl -u dmbyokd --no-pager | tail -30; fail "not attached"; }
	echo "KMS answering -> 7 volumes attached in $t s"
	echo "--- dmbyokd and the KMS emulator since the KMS's start (monotonic time)"
	journalctl -u dmbyokd -u kms-emulator -o short-monotonic --no-pager | tail -n 20
	t=$(wait_for 60 eval 'for i in 1 2 3 4 5 6 7; do mountpoint -q /srv/v$i || exit 1; done') ||
		fail "the mounts did not follow the late attach"
	echo "-> all 7 mounted $t s later"
	# v8's retry has its own back-off: its answer may come after the other seven attached.
	check "dmbyok volumes says v8's key refuses" \
		wait_quietly 180 bash -c "$DMBYOK volumes --json | jq -e '.[7].agent == \"key-revoked\"'"
	check "v8 (key revoked) is not attached" test ! -e /dev/mapper/v8
	check "the journal says it stays locked until the key is usable" \
		wait_quietly 60 bash -c "journalctl -u dmbyokd --no-pager | grep -q 'Not attaching v8: its customer key refuses'"
	$DMBYOK volumes
fi
systemctl stop dmbyokd.service
finish
