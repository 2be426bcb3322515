#!/usr/bin/env bash
# cloud.sh PROVIDER (gcp|azure): a volume under a cloud KMS key, on real dm-crypt, against
# the provider's emulator on the guest's loopback (over TLS, test CA). The same scenario for
# every provider; what differs (the emulator's setup, the key, the customer's levers, the
# audit vocabulary, the provider's own checks) is in cloud-PROVIDER.sh, sourced below.
# format names the key, the token says the provider, the exact key version and the region;
# open/close/reopen and lock/unlock keep the data and the table holds only a keyring
# reference; a token copied to another volume is refused before any KMS call; dmbyokd locks
# the volume when the key (version) is disabled or this host's access is removed, restores
# it when they are back, rides out an emulator outage, and no acknowledged write is lost.
. "$(dirname "$0")/lib.sh"
PROVIDER=${1:?usage: cloud.sh gcp|azure}
[ -f "$(dirname "$0")/cloud-$PROVIDER.sh" ] || fail "no adapter cloud-$PROVIDER.sh for '$PROVIDER'"
A=/dev/vda B=/dev/vdb
MNT=$WORK/mnt
mkdir -p "$MNT"

# The adapter sets: EMU_BIN, EMU_LISTEN (fixed: the emulator is stopped and restarted under
# the agent), EMU_URL, KEY, REGION, HOST_PRINCIPAL (as the emulator's audit names this host),
# AUTH_OP/WRAP_OP/UNWRAP_OP (audit operations: token, wrap, unwrap), WRAP_MATCH (more jq
# conditions on the format's wrap record), DENIED_RESULT (the unwrap's result once access is
# gone), DISABLE_WHAT/ACCESS_WHAT/OPEN_WHAT/COPY_NOTE (words for the output); and defines
# provider_setup, is_key_version V, oracle_unwrap TOKEN FILE, key_disable, key_enable,
# access_remove, access_restore and the hooks provider_format_checks,
# provider_disabled_checks, provider_extra_checks (the provider's own checks).
# shellcheck source=cloud-gcp.sh
. "$(dirname "$0")/cloud-$PROVIDER.sh"
AUDIT=$WORK/$PROVIDER-audit.log

cleanup() { kill -9 ${AGENT:-} ${WRITER:-} ${EMU_PID:-} ${STANDBY:-} 2>/dev/null || true; }
trap cleanup EXIT

# spawn_emulator NAME [--standby]: the emulator over TLS on $EMU_LISTEN, its state and audit
# log under $WORK, its output in $WORK/NAME.out; sets SPAWNED. --standby: loaded (Python
# starts slowly under TCG), binds on SIGUSR1, so that it takes over a stopped one's address.
spawn_emulator() {
	local name=$1
	shift
	"$EMU_BIN" --listen "$EMU_LISTEN" --state "$WORK/$PROVIDER.json" --audit-log "$AUDIT" \
		--tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" "$@" \
		>"$WORK/$name.out" 2>"$WORK/$name.err" &
	SPAWNED=$!
}
emulator_says() { # emulator_says NAME PID LINE: wait for that line of the emulator's
	for _ in $(seq 1200); do
		grep -q "$3" "$WORK/$1.out" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || { cat "$WORK/$1.err" >&2; fail "the emulator $1 died"; }
		sleep 0.1
	done
	fail "the emulator $1 never said '$3'"
}
quietly() { "$@" >/dev/null; }
# How many calls of OPERATION the emulator answered (any result).
calls_of() { jq -r .operation "$AUDIT" | grep -cx "$1" || true; }
# audit_has JQ: JQ, over the array of the emulator's audit records, is true.
audit_has() { jq -se "$1" "$AUDIT" >/dev/null; }
agent_json() { $DMBYOK status "$1" --json | jq -c .agent; }
agent_sees_revoked() {
	$DMBYOK status orders --json |
		jq -e '.agent.lock_reason == "revoked" and .agent.last_probe_class == "key-revoked"' >/dev/null
}
locked_or_torn_down() { case $(state "$1") in locked | torn-down) return 0 ;; esac; return 1; }
data_intact() { test "$(head -c "$(stat -c %s "$WORK/blob")" /dev/mapper/orders | sha256sum)" = "$SUM"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

step "$PROVIDER emulator over TLS, a key this host may use"
# The test CA and a server certificate for 127.0.0.1 and the names Azure's clients use.
"$DMBYOK_SOURCE_DIR/tests/kms-emulator-azure/make-test-certs" "$WORK" ||
	fail "cannot make the test certificates"
spawn_emulator ${PROVIDER}1
EMU_PID=$SPAWNED
emulator_says ${PROVIDER}1 "$EMU_PID" 'listening on'
echo "emulator at $EMU_URL (up at $(elapsed) s)"
provider_setup

step "format under the $PROVIDER key"
check "format succeeds" $DMBYOK format $A --key "$KEY" --context tenant=acme --quiet
$DMBYOK dump $A --json >"$WORK/dump.json"
jq -c .token "$WORK/dump.json"
VERSION=$(jq -r .token.key_arn "$WORK/dump.json")
check "dump --json: kms is $PROVIDER" test "$(jq -r .token.kms "$WORK/dump.json")" = "$PROVIDER"
check "dump --json: the key as named" test "$(jq -r .token.key_id "$WORK/dump.json")" = "$KEY"
check "dump --json: the exact key version that wrapped ($VERSION)" is_key_version "$VERSION"
check "dump --json: the region ($REGION)" test "$(jq -r .token.region "$WORK/dump.json")" = "$REGION"
provider_format_checks
check "the emulator saw the host's $AUTH_OP and its $WRAP_OP" audit_has \
	"any(.operation == \"$AUTH_OP\" and .result == \"OK\") and
	 any(.operation == \"$WRAP_OP\" and .result == \"OK\" and .principal == \"$HOST_PRINCIPAL\" $WRAP_MATCH)"

step "open, data through the mapping, close, reopen, lock, unlock"
t0=$(date +%s%N)
check "open succeeds" $DMBYOK open $A orders --quiet
echo "TIMING: open ($OPEN_WHAT) took $(ms_since "$t0") ms"
TABLE=$(dmsetup table orders)
echo "$TABLE"
check "the table names a logon key in the keyring, not key bytes" grep -q ':64:logon:dmbyok:' <<<"$TABLE"
# Oracle: the DEK, unwrapped by the emulator for this host, as the provider's client would.
oracle_unwrap "$(token_json $A)" "$WORK/dek"
check "the oracle unwrapped a 64-byte DEK" test "$(stat -c %s "$WORK/dek")" -eq 64
DEK_HEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n')
rm -f "$WORK/dek"
check "dmsetup table --showkeys has no key hex" bash -c "! dmsetup table --showkeys orders | grep -qi $DEK_HEX"
check "no dmbyok key is left in any keyring" bash -c "! grep -q 'dmbyok:' /proc/keys"
MARKER="dmbyok-$PROVIDER-plaintext-$RANDOM$RANDOM"
{ for i in $(seq 20000); do echo "$MARKER line $i"; done; head -c 7M /dev/urandom; } >"$WORK/blob"
SUM=$(sha256sum <"$WORK/blob")
check "write $(($(stat -c %s "$WORK/blob") >> 20)) MiB through /dev/mapper/orders, fsync'd" \
	dd if="$WORK/blob" of=/dev/mapper/orders bs=1M conv=fsync status=none
check "close" $DMBYOK close orders --quiet
check "the raw disk does not hold the plaintext" bash -c "! grep -qa '$MARKER' $A"
check "reopen" $DMBYOK open $A orders --quiet
check "the data read back is identical" data_intact
$DMBYOK status orders --json >"$WORK/status.json"
check "status --json: active, the key and its version" \
	quietly jq -e ".state == \"active\" and .key_id == \"$KEY\" and .key_arn == \"$VERSION\"" "$WORK/status.json"
check "lock" $DMBYOK lock orders --quiet
t0=$(date +%s%N)
check "unlock" env DMBYOK_LOG_LEVEL=debug $DMBYOK unlock orders 2>"$WORK/unlock.err"
UNLOCK_MS=$(ms_since "$t0")
echo "TIMING: unlock wall time (dmbyok unlock: KMS unwrap + key set + resume) $UNLOCK_MS ms"
# Where it went: dmbyok's own audit line for the Decrypt, and the emulator's side of it.
KMS_MS=$(sed -n 's/.*KMS Decrypt .*: ok in \([0-9]*\) ms.*/\1/p' "$WORK/unlock.err" | tail -n 1)
EMU=$(jq -rs --arg u "$UNWRAP_OP" --arg a "$AUTH_OP" '[.[] | select(.operation == $u or .operation == $a)] |
	.[-2:] | map(.operation + " " + (.latency_ms | tostring) + " ms") | join(", ")' "$AUDIT")
echo "TIMING: of which the KMS Decrypt call ${KMS_MS:-?} ms (emulator side: $EMU)"
check "the data is still there after lock/unlock" data_intact

step "a token copied to another volume is refused$COPY_NOTE"
check "format $B under the same key" $DMBYOK format $B --key "$KEY" --quiet
token_json $A | jq -c '.keyslots = ["0"]' >"$WORK/copied.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/copied.json" $B
before=$(header_sum $B) maps=$(dmsetup ls) unwraps=$(calls_of "$UNWRAP_OP")
expect_exit 6 "open of $B with $A's token" $DMBYOK open $B other
check "refused before any KMS call ($UNWRAP_OP)" test "$(calls_of "$UNWRAP_OP")" = "$unwraps"
check "the header is unchanged" test "$(header_sum $B)" = "$before"
check "the mappings are unchanged" test "$(dmsetup ls)" = "$maps"

provider_extra_checks # may move the volume to a new key version (VERSION)

step "the agent watches the key; a writer on ext4 on the mapping"
mkfs.ext4 -q /dev/mapper/orders
mount /dev/mapper/orders "$MNT"
start_writer "$MNT/log"
start_agent --check-interval 1 --restore-interval 1
spawn_emulator ${PROVIDER}2 --standby # for the outage below, loading meanwhile
STANDBY=$SPAWNED
check "the agent probes the key version and finds it answering" wait_quietly 30 eval \
	"$DMBYOK status orders --json | jq -e '.agent.key_arn == \"$VERSION\" and .agent.state == \"active\" and .agent.probes >= 1 and .agent.last_probe_class == \"ok\"'"
agent_json orders

step "the customer disables the $DISABLE_WHAT"
key_disable
t=$(wait_for 60 locked_or_torn_down orders) || { cat "$WORK/agent.log"; fail "not locked"; }
echo "TIMING: $DISABLE_WHAT disabled -> orders $(state orders) in $t s"
LOCK1=$t
agent_json orders
check "the agent's view: locked because the key was revoked" agent_sees_revoked
provider_disabled_checks
check "the table no longer names a key" bash -c "! dmsetup table orders | grep -q ':logon:'"
A1=$(acked); sleep 2; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"

step "the customer enables it again"
key_enable
t=$(wait_state orders active 60) || { cat "$WORK/agent.log"; fail "not restored"; }
echo "TIMING: $DISABLE_WHAT enabled -> orders active in $t s"
RESTORE1=$t
check "the writer goes on" wait_quietly 20 eval "[ \$(acked) -gt $A2 ]"

step "a 10 s emulator outage locks nothing"
emulator_says ${PROVIDER}2 "$STANDBY" 'standing by'
probes=$($DMBYOK status orders --json | jq .agent.probes)
t_down=$(date +%s%N)
kill "$EMU_PID" && wait "$EMU_PID" 2>/dev/null || true
A3=$(acked) seen=
# 10 s without the KMS at least, and on until the agent has seen it (its probes may be slow
# to come round under load; 60 s at most): the volume stays active all along.
while [ $(($(date +%s%N) - t_down)) -lt 10000000000 ] ||
	{ [ -z "$seen" ] && [ $(($(date +%s%N) - t_down)) -lt 60000000000 ]; }; do
	$DMBYOK status orders --json >"$WORK/outage.json"
	[ "$(jq -r .state "$WORK/outage.json")" = active ] ||
		{ cat "$WORK/outage.json" "$WORK/agent.log"; fail "orders is not active during the outage"; }
	jq -e ".agent.probes > $probes and .agent.last_probe_class == \"kms-unreachable\"" \
		"$WORK/outage.json" >/dev/null && seen=$(jq -c .agent "$WORK/outage.json")
	sleep 0.5
done
A4=$(acked)
kill -USR1 "$STANDBY"
EMU_PID=$STANDBY STANDBY=
emulator_says ${PROVIDER}2 "$EMU_PID" 'listening on'
echo "TIMING: the emulator was down for $(awk -v a="$t_down" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}') s"
ok "orders stayed active through the outage"
echo "${seen:-the agent never reported the outage}"
check "the agent probed during the outage and saw the KMS unreachable" test -n "$seen"
check "the writer went on during the outage ($A3 -> $A4)" test "$A4" -gt "$A3"
t=$(wait_for 60 eval "$DMBYOK status orders --json | jq -e '.agent.last_probe_class == \"ok\"'") ||
	{ cat "$WORK/agent.log"; fail "the probes never answered again"; }
echo "TIMING: emulator back -> first good probe in $t s"
check "still active" test "$(state orders)" = active
check "the agent locked only once (the disabled $DISABLE_WHAT)" \
	test "$(grep -c 'Locking the .* the customer revoked the key' "$WORK/agent.log")" -eq 1

step "the customer removes this host's $ACCESS_WHAT"
access_remove
t=$(wait_for 60 locked_or_torn_down orders) || { cat "$WORK/agent.log"; fail "not locked"; }
echo "TIMING: $ACCESS_WHAT removed -> orders $(state orders) in $t s"
LOCK2=$t
check "the agent's view: revoked ($DENIED_RESULT)" agent_sees_revoked
check "the emulator denied the host's $UNWRAP_OP" audit_has \
	"any(.operation == \"$UNWRAP_OP\" and .result == \"$DENIED_RESULT\" and .principal == \"$HOST_PRINCIPAL\")"
access_restore
t=$(wait_state orders active 60) || { cat "$WORK/agent.log"; fail "not restored"; }
echo "TIMING: $ACCESS_WHAT restored -> orders active in $t s"
RESTORE2=$t
A4=$(acked)
check "the writer goes on" wait_quietly 20 eval "[ \$(acked) -gt $A4 ]"

step "no acknowledged write was lost"
stop_writer
kill $AGENT && wait $AGENT 2>/dev/null || true
umount "$MNT"
check "close" $DMBYOK close orders --quiet
check "reopen" $DMBYOK open $A orders --quiet
mount -o ro /dev/mapper/orders "$MNT"
check_acked_survived "$MNT/log" "two revocations, two restores and an outage"
umount "$MNT"
check "close" $DMBYOK close orders --quiet
echo "--- agent log"
cat "$WORK/agent.log"
echo "SUMMARY ($PROVIDER): unlock ${UNLOCK_MS} ms; agent lock after disable ${LOCK1} s, after $ACCESS_WHAT removal ${LOCK2} s; restore after enable ${RESTORE1} s, after $ACCESS_WHAT restored ${RESTORE2} s"
kill "$EMU_PID" && wait "$EMU_PID" 2>/dev/null || true
finish
