#!/usr/bin/env bash
# dmbyokd keeps the promise on real dm-crypt: two customer keys, three volumes, a writer
# that fsyncs. Disabling a key (or denying this host in its policy) locks that key's
# volumes and only those, within seconds (the one nobody holds is torn down at once);
# status shows the agent's view; re-enabling it brings them back; no acknowledged
# write is lost; a KMS outage locks nothing; a kill -9'd agent restarted over a torn-down
# volume adopts it and keeps it so until the key is back.
# agent.sh [PROVIDER]: aws (default), gcp or azure, through its KMS adapter (lib.sh).
. "$(dirname "$0")/lib.sh"
use_kms "${1:-aws}"
MNT=$WORK/mnt
mkdir -p "$MNT"

AGENT_OPTS=(--check-interval 2 --restore-interval 1 --lock-timeout 10)
cleanup() {
	local rc=$?
	kill -9 "${AGENT:-}" "${WRITER:-}" 2>/dev/null || true
	[ "$rc" -eq 0 ] || release_suspended
}
trap cleanup EXIT

step "two keys, three volumes, a writer on one of key A's"
kms_start
KEY_A=$(kms_new_key a)
KEY_B=$(kms_new_key b)
for v in "a1 /dev/vda $KEY_A" "a2 /dev/vdb $KEY_A" "b1 /dev/vdc $KEY_B"; do
	set -- $v
	check "format $2 under $3" $DMBYOK format "$2" --key "$3" --quiet
	check "open it as $1" $DMBYOK open "$2" "$1" --quiet
done
mkfs.ext4 -q /dev/mapper/a1
mount /dev/mapper/a1 "$MNT"
start_writer "$MNT/log"

step "the agent adopts what exists and changes nothing"
start_agent "${AGENT_OPTS[@]}"
# Its start-up line, then a first probe of each key: only then has it had its chance to act.
check "the agent watches both keys" wait_quietly 60 grep -q "Watching 2 key" "$WORK/agent.log"
probed_ok() { $DMBYOK status "$1" --json | jq -e '.agent.probes >= 1 and .agent.last_probe_class == "ok"' >/dev/null; }
for n in a1 b1; do check "the agent probed $n's key" wait_quietly 60 probed_ok $n; done
for n in a1 a2 b1; do check "$n stays active" test "$(state $n)" = active; done

step "the customer disables key A ($KMS_DISABLE_WHAT)"
kms_disable "$KEY_A"
t=$(wait_state a1 locked 60) || { cat "$WORK/agent.log"; fail "a1 was not locked"; }
echo "TIMING ($PROVIDER): $KMS_DISABLE_WHAT disabled -> a1 locked in $t s"
check "a2 (key A, held by nobody) is locked and torn down at once" wait_quietly 30 eval '! dmsetup info a2'
# The agent's views follow its own bookkeeping: a2's once its rescan (on the removal's uevent) ran.
check "the agent's view: a1 locked because key A was revoked" wait_quietly 30 bash -c "$DMBYOK status a1 --json | jq -e '.agent.state == \"locked\" and .agent.lock_reason == \"revoked\" and .agent.last_probe_class == \"key-revoked\"'"
check "the agent's view: a2 torn down" wait_quietly 30 bash -c "$DMBYOK status a2 --json | jq -e '.agent.state == \"torn-down\"'"
check "the agent's view: b1 active, its key answering" bash -c "$DMBYOK status b1 --json | jq -e '.agent.state == \"active\" and .agent.last_probe_class == \"ok\"'"
check "b1 (key B) is not touched" test "$(state b1)" = active
check "no key of A's volumes is in kernel memory" bash -c "! dmsetup table a1 | grep -q ':logon:' && ! dmsetup table a2 2>/dev/null | grep -q ':logon:'"
A1=$(acked); sleep 2; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"

step "the customer enables key A again"
kms_enable "$KEY_A"
t=$(wait_state a1 active 60) || { cat "$WORK/agent.log"; fail "a1 was not restored"; }
echo "TIMING ($PROVIDER): $KMS_DISABLE_WHAT enabled -> a1 active in $t s"
check "a2 is mapped again too" wait_quietly 30 eval '[ "$(state a2)" = active ]'
# restored_at is set when the restore's child has exited: after a2 is mapped again.
check "the agent's view: a1 active again, with the time it was restored" wait_quietly 30 bash -c "$DMBYOK status a1 --json | jq -e '.agent.state == \"active\" and (.agent.restored_at | type) == \"string\"'"
check "the writer goes on (more than $A2 acknowledged)" wait_quietly 30 eval '[ "$(acked)" -gt "$A2" ]'

step "a KMS outage of 5 intervals locks nothing"
kms_stop
sleep 10
for n in a1 a2 b1; do check "$n still active during the outage" test "$(state $n)" = active; done
kms_restart
check "the agent decided no lock during the outage (still only key A's)" \
	test "$(grep -c 'Locking the .* the customer revoked the key' "$WORK/agent.log")" -eq 1

step "the customer removes this host's $KMS_DENY_WHAT on key B: only b1 is locked"
kms_deny "$KEY_B"
t=$(wait_for 60 eval '! dmsetup info b1') || { cat "$WORK/agent.log"; fail "b1 was not torn down"; }
echo "TIMING ($PROVIDER): $KMS_DENY_WHAT removed -> b1 (held by nobody) locked and torn down in $t s"
check "a1 is not touched" test "$(state a1)" = active

step "kill -9 of the agent while b1 is torn down; a new agent adopts it as it is"
kill -9 $AGENT
wait $AGENT 2>/dev/null || true
check "without the agent, status says so" bash -c "$DMBYOK status a1 --json | jq -e '.agent.running == false'"
check "b1 stays torn down without the agent (its record)" jq -e .torn_down "$DMBYOK_RUNTIME_DIR/mappings/b1.json"
start_agent "${AGENT_OPTS[@]}"
check "the new agent says it keeps b1 torn down" wait_quietly 60 grep -q "b1 is torn down: keeping it so" "$WORK/agent.log"
check "the new agent probed key B and was denied" wait_quietly 60 bash -c "$DMBYOK status b1 --json | jq -e '.agent.probes >= 1 and .agent.last_probe_class == \"key-revoked\"'"
check "the new agent keeps b1 torn down (the key is still denied)" bash -c "! dmsetup info b1 >/dev/null 2>&1"
kms_allow "$KEY_B"
t=$(wait_state b1 active 60) || { cat "$WORK/agent.log"; fail "b1 was not restored"; }
echo "TIMING ($PROVIDER): $KMS_DENY_WHAT restored -> b1 mapped again and active in $t s (new agent)"

step "no acknowledged write was lost"
stop_writer
kill $AGENT; wait $AGENT 2>/dev/null || true
umount "$MNT"
check "close a1" $DMBYOK close a1 --quiet
check "reopen a1" $DMBYOK open /dev/vda a1 --quiet
mount -o ro /dev/mapper/a1 "$MNT"
check_acked_survived "$MNT/log" "revocation and restore"
umount "$MNT"
for n in a1 a2 b1; do $DMBYOK close $n --quiet; done
echo "--- agent log"
cat "$WORK/agent.log"
kms_stop
finish
