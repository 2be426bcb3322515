#!/usr/bin/env bash
# dmbyokd keeps the promise on real dm-crypt: two customer keys, three volumes, a writer
# that fsyncs. Disabling a key (or denying this host in its policy) locks that key's
# volumes and only those, within seconds; re-enabling it brings them back; no acknowledged
# write is lost; a KMS outage locks nothing; a kill -9'd agent restarted over locked
# volumes adopts them and keeps them locked until the key is back.
. "$(dirname "$0")/lib.sh"
DMBYOKD=$DMBYOK_BUILD_DIR/src/agent/dmbyokd
MNT=$WORK/mnt
mkdir -p "$MNT"
export KMS_LISTEN=127.0.0.1:48123 # fixed: the KMS is stopped and restarted under the agent

state() { $DMBYOK status "$1" --json 2>/dev/null | jq -r .state; }
# wait_state NAME STATE SECONDS: poll until NAME is in STATE; prints the time it took.
wait_state() {
	local t0 t
	t0=$(date +%s.%N)
	for _ in $(seq $(($3 * 10))); do
		if [ "$(state "$1")" = "$2" ]; then
			awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'
			return 0
		fi
		sleep 0.1
	done
	return 1
}
start_agent() {
	"$DMBYOKD" --check-interval 2 --restore-interval 1 --lock-timeout 10 \
		>>"$WORK/agent.log" 2>&1 &
	AGENT=$!
	sleep 1
	kill -0 $AGENT 2>/dev/null || { cat "$WORK/agent.log" >&2; fail "dmbyokd died"; }
}
cleanup() { kill -9 "${AGENT:-}" "${WRITER:-}" 2>/dev/null || true; }
trap cleanup EXIT

step "two keys, three volumes, a writer on one of key A's"
start_kms
KEY_A=$(create_key alias/a)
KEY_B=$(create_key alias/b)
for v in "a1 /dev/vda alias/a" "a2 /dev/vdb alias/a" "b1 /dev/vdc alias/b"; do
	set -- $v
	check "format $2 under $3" $DMBYOK format "$2" --key "$3" --quiet
	check "open it as $1" $DMBYOK open "$2" "$1" --quiet
done
mkfs.ext4 -q /dev/mapper/a1
mount /dev/mapper/a1 "$MNT"
start_writer "$MNT/log"

step "the agent adopts what exists and changes nothing"
start_agent
sleep 3
for n in a1 a2 b1; do check "$n stays active" test "$(state $n)" = active; done
check "the agent watches both keys" grep -q "Watching 2 key" "$WORK/agent.log"

step "the customer disables key A"
kms_as customer DisableKey "{\"KeyId\":\"$KEY_A\"}" >/dev/null
t=$(wait_state a1 locked 20) || { cat "$WORK/agent.log"; fail "a1 was not locked"; }
echo "revocation -> a1 locked in $t s"
check "a2 (key A) is locked too" bash -c "[ \$($DMBYOK status a2 --json | jq -r .state) = locked ]"
check "b1 (key B) is not touched" test "$(state b1)" = active
check "no key of A's volumes is in kernel memory" bash -c "! dmsetup table a1 | grep -q ':logon:' && ! dmsetup table a2 | grep -q ':logon:'"
A1=$(acked); sleep 2; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"

step "the customer enables key A again"
kms_as customer EnableKey "{\"KeyId\":\"$KEY_A\"}" >/dev/null
t=$(wait_state a1 active 20) || { cat "$WORK/agent.log"; fail "a1 was not restored"; }
echo "restore -> a1 active in $t s"
check "a2 is back too" bash -c "for _ in \$(seq 50); do [ \$($DMBYOK status a2 --json | jq -r .state) = active ] && exit 0; sleep 0.1; done; exit 1"
sleep 2
check "the writer goes on ($A2 -> $(acked))" test "$(acked)" -gt "$A2"

step "a KMS outage of 5 intervals locks nothing"
stop_kms
sleep 10
for n in a1 a2 b1; do check "$n still active during the outage" test "$(state $n)" = active; done
start_kms
check "the agent decided no lock during the outage (still only key A's)" \
	test "$(grep -c 'locking its volumes' "$WORK/agent.log")" -eq 1

step "key B's policy stops allowing this host: only b1 is locked"
deny='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/dmbyok-host"},"Action":"kms:Decrypt","Resource":"*"}]}'
allow='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}'
kms_as customer PutKeyPolicy "{\"KeyId\":\"$KEY_B\",\"PolicyName\":\"default\",\"Policy\":$(jq -Rs . <<<"$deny")}" >/dev/null
t=$(wait_state b1 locked 20) || { cat "$WORK/agent.log"; fail "b1 was not locked"; }
echo "policy revocation -> b1 locked in $t s"
check "a1 is not touched" test "$(state a1)" = active

step "kill -9 of the agent while b1 is locked; a new agent adopts it, locked"
kill -9 $AGENT
wait $AGENT 2>/dev/null || true
check "b1 stays locked without the agent" test "$(state b1)" = locked
start_agent
sleep 3
check "the new agent keeps b1 locked (the key is still denied)" test "$(state b1)" = locked
check "and says why" grep -q "b1 is locked: keeping it so" "$WORK/agent.log"
kms_as customer PutKeyPolicy "{\"KeyId\":\"$KEY_B\",\"PolicyName\":\"default\",\"Policy\":$(jq -Rs . <<<"$allow")}" >/dev/null
t=$(wait_state b1 active 20) || { cat "$WORK/agent.log"; fail "b1 was not restored"; }
echo "policy restored -> b1 active in $t s (new agent)"

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
stop_kms
finish
