#!/usr/bin/env bash
# A boot with systemd as PID 1 (tests/vm/run --systemd --prepare boot-prepare.sh): the
# crypttab lines `NAME UUID=... none luks,_netdev,headless=1,nofail` of two dmbyok volumes
# and an fstab `_netdev` mount of the first. Proves: the generator's drop-ins order the
# volumes after network-online.target and give systemd-cryptsetup the KMS settings; the
# first volume is opened by systemd-cryptsetup through the plugin and mounted, its data
# intact, and it is a dmbyok mapping for `dmbyok status`; the second, whose KMS calls hang,
# was started only because remote-cryptsetup.target is pulled in, and its unit failed within
# the plugin's bound with the plugin's message while the boot finished (nothing waits for
# it: nofail).
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
[ "$(cat /proc/1/comm)" = systemd ] || fail "run with tests/vm/run --systemd --prepare boot-prepare.sh"
DATA_UNIT=systemd-cryptsetup@bootdata.service
DOWN_UNIT=systemd-cryptsetup@bootdown.service
prop() { systemctl show -P "$2" "$1"; }
# Seconds between two of a unit's monotonic timestamps (microseconds).
span() { awk -v a="$(prop "$1" "$2")" -v b="$(prop "$1" "$3")" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
# Jobs left but this script's own and its target's (which waits for it).
boot_done() { [ -z "$(systemctl list-jobs --no-legend | grep -v -e dmbyok-test.service -e dmbyok.target)" ]; }

step "the boot finishes (every job but this script's done)"
T=$(wait_for 240 boot_done) || { systemctl list-jobs; fail "boot jobs still pending after 240 s"; }
ok "no boot job left after ${T}s of this script"
systemctl list-units --no-pager --all 'systemd-cryptsetup@*' 'remote-*' 'srv-*' dmbyok-test-kms.service

step "the generator's work"
check "remote-cryptsetup.target is not enabled in the image (Debian 12)" \
	test ! -e /etc/systemd/system/multi-user.target.wants/remote-cryptsetup.target
check "the generator made remote-fs.target want it" \
	test -L /run/systemd/generator/remote-fs.target.wants/remote-cryptsetup.target
check "remote-cryptsetup.target is active" systemctl is-active --quiet remote-cryptsetup.target
for unit in $DATA_UNIT $DOWN_UNIT; do
	check "$unit has the dmbyok drop-in" \
		bash -c "systemctl show -P DropInPaths $unit | grep -q /run/systemd/generator/$unit.d/50-dmbyok.conf"
	check "$unit is ordered after network-online.target" \
		bash -c "systemctl show -P After $unit | grep -qw network-online.target"
done
check "the KMS unit was up before network-online.target" \
	test "$(prop dmbyok-test-kms.service ActiveEnterTimestampMonotonic)" -le \
	"$(prop network-online.target ActiveEnterTimestampMonotonic)"

step "the first volume: opened by systemd-cryptsetup through the plugin, mounted"
check "$DATA_UNIT is active" systemctl is-active --quiet $DATA_UNIT
check "/srv/bootdata is mounted from /dev/mapper/bootdata" \
	bash -c "findmnt -n -o SOURCE /srv/bootdata | grep -qx /dev/mapper/bootdata"
check "the data written through dmbyok before the boot reads back" \
	test "$(cat /srv/bootdata/hello)" = "written through dmbyok before the boot"
# The plugin's entries, by the PID of the unit's systemd-cryptsetup (_PID comes with the
# message itself; _SYSTEMD_UNIT may be missing for a process that exited at once).
# --sync: journald has stored what the units sent before it returns (it reads them
# asynchronously).
journalctl --sync
journalctl -b -o json SYSLOG_IDENTIFIER=dmbyok-token >"$WORK/plugin.journal"
jq -c '{pid: ._PID, unit: ._SYSTEMD_UNIT, op: .OPERATION, result: .RESULT, msg: .MESSAGE}' "$WORK/plugin.journal"
DATA_PID=$(prop $DATA_UNIT ExecMainPID)
check "the plugin's KMS Decrypt ran in $DATA_UNIT's systemd-cryptsetup (pid $DATA_PID), with success" \
	jq -s -e --arg pid "$DATA_PID" 'any(._PID == $pid and .OPERATION == "Decrypt" and .RESULT == "ok")' "$WORK/plugin.journal"
check "dmbyok status shows it active" test "$(state bootdata)" = active
echo "  $DATA_UNIT: $(span $DATA_UNIT ExecMainStartTimestampMonotonic ActiveEnterTimestampMonotonic)s to unlock"

step "the second volume: its KMS hangs; the unit failed within the plugin's bound"
check "$DOWN_UNIT failed (not activating: the boot is not waiting on it)" \
	test "$(prop $DOWN_UNIT ActiveState)" = failed
journalctl -b -u $DOWN_UNIT --no-pager -o cat | tail -n 8
# Plain messages reach the journal through the unit's stderr stream (identifier
# systemd-cryptsetup); its KMS call's audit entry is native (identifier dmbyok-token).
check "with the plugin's message" \
	bash -c "journalctl -b -u $DOWN_UNIT -o cat | grep -q 'the KMS is unreachable or failing for key'"
DOWN_PID=$(prop $DOWN_UNIT ExecMainPID)
check "and the audit entries of its timed-out Decrypt attempts" \
	jq -s -e --arg pid "$DOWN_PID" 'any(._PID == $pid and .OPERATION == "Decrypt" and .RESULT == "kms-unreachable")' "$WORK/plugin.journal"
check "no mapping was made" bash -c "! dmsetup info bootdown >/dev/null 2>&1"
echo "  $DOWN_UNIT: failed after $(span $DOWN_UNIT ExecMainStartTimestampMonotonic ExecMainExitTimestampMonotonic)s (plugin bound: 3 attempts of at most 5 s each)"
finish
