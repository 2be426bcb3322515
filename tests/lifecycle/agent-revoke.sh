#!/usr/bin/env bash
# dmbyokd locks on every means of revocation and never on an outage, on real dm-crypt.
# Key G's policy does not allow this host: the host reaches G through a grant only. Key D
# is an ordinary key. A writer fsyncs on G's volume.
#  - Revoking the grant locks G's volume, granting again restores it; meanwhile D's probes
#    fail in every transient way the KMS has (throttling, proxy 5xx, resets, KMS's own
#    internal errors), and D's volume is not touched.
#  - Scheduling D's deletion locks D's volume (and tears it down: nothing holds it open);
#    it stays so while the cancelled key is Disabled and comes back once the key is
#    enabled; meanwhile G's probe gets no answer at all (the client's time-out, 30 check
#    intervals) and G's volume is not touched.
#  - The KMS process stopped locks nothing; nor do broken host credentials (an alert).
#  - --fail-closed-after locks when the KMS is gone that long; its return restores.
#  - No acknowledged write is lost.
# The agent probes every second; its debug log (each probe's answer, each decision) is
# the oracle for "no decision", the volumes' state for "locked" and "active".
. "$(dirname "$0")/lib.sh"
DMBYOKD=$DMBYOK_BUILD_DIR/src/agent/dmbyokd
MNT=$WORK/mnt
mkdir -p "$MNT"
export KMS_LISTEN=127.0.0.1:48125 # fixed: the KMS is stopped and restarted under the agent
HOST_ROLE=arn:aws:iam::111122223333:role/dmbyok-host

state() { $DMBYOK status "$1" --json 2>/dev/null | jq -r .state; }
seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# The agent's log, read from a mark on: each phase looks only at what was said since.
mark() { wc -l <"$AGENT_LOG"; }
since() { tail -n +$(($1 + 1)) "$AGENT_LOG"; }
count_since() { awk -v from="$1" -v text="$2" 'NR > from && index($0, text) { n++ } END { print n + 0 }' "$AGENT_LOG"; }
logged_since() { [ "$(count_since "$1" "$2")" -gt 0 ]; }
# wait_log FROM TEXT COUNT SECONDS: until TEXT is in COUNT lines logged after mark FROM.
wait_log() {
	for _ in $(seq $(($4 * 4))); do
		[ "$(count_since "$1" "$2")" -ge "$3" ] && return 0
		kill -0 "$AGENT" 2>/dev/null || { cat "$AGENT_LOG" >&2; fail "dmbyokd died"; }
		sleep 0.25
	done
	return 1
}
# wait_done FROM VERBS KEY SECONDS WHAT: until the agent says it did one of VERBS (an ERE:
# "Locked", Restored) to KEY's volumes, after mark FROM; prints the
# seconds it took.
wait_done() {
	local t0 n
	t0=$(date +%s.%N)
	for _ in $(seq $(($4 * 4))); do
		n=$(awk -v from="$1" -v verb="^dmbyokd: $2 " -v key="volume(s) of $3." \
			'NR > from && $0 ~ verb && index($0, key) { n++ } END { print n + 0 }' "$AGENT_LOG")
		[ "$n" -gt 0 ] && { seconds_since "$t0"; return 0; }
		sleep 0.25
	done
	since "$1" >&2
	fail "$5: the agent never said it $2 the volumes of $3"
}
# decisions_since FROM [KEY]: state changes, locks, unlocks and alerts (about KEY).
decisions_since() {
	since "$1" | grep -E -e ': (active|suspect|locked|torn-down|key-deleted) -> ' \
		-e 'locking|dmbyokd: (Locked|Restored|Unlocked|Tore down|Reprovisioned)|no longer exists' \
		-e 'credentials fail|fails unexpectedly' |
		grep -F -- "${2:-}" || true
}
no_decision_since() { [ -z "$(decisions_since "$@")" ] || { decisions_since "$@" >&2; false; }; }
# wait_answers FROM CLASS COUNT SECONDS WHAT [KEY...]: the keys' probes (default: both)
# answered CLASS COUNT times since mark FROM.
wait_answers() {
	local from=$1 class=$2 n=$3 secs=$4 what=$5 k
	shift 5
	[ $# -gt 0 ] || set -- "$KEY_G" "$KEY_D"
	for k; do
		wait_log "$from" "Probe of $k: $class in" "$n" "$secs" ||
			{ since "$from" >&2; fail "$what: $k was not answered $class $n times"; }
	done
}
# wait_writer A SECONDS: the writer acknowledged more than A records.
wait_writer() {
	for _ in $(seq $(($2 * 4))); do
		[ "$(acked)" -gt "$1" ] && return 0
		sleep 0.25
	done
	return 1
}

# start_agent LOG [dmbyokd option...]: a probe every second, the debug log (without the
# libraries' debug output: each rescan would add pages of it every second).
start_agent() {
	AGENT_LOG=$1
	shift
	: >"$AGENT_LOG"
	"$DMBYOKD" --check-interval 1 --restore-interval 1 --lock-timeout 10 --debug "$@" \
		> >(grep --line-buffered -v -e ': libcryptsetup: ' -e ': libdevmapper: ' >>"$AGENT_LOG") 2>&1 &
	AGENT=$!
	wait_log 0 "Watching 2 key(s)" 1 30 || { cat "$AGENT_LOG" >&2; fail "dmbyokd did not start"; }
}
key_in_kernel() { local t; t=$(dmsetup table "$1") && [[ $t == *:logon:* ]]; }
# no_key_in_kernel NAME...: their mappings, where there are any, hold no key.
no_key_in_kernel() {
	local n t
	for n; do
		t=$(dmsetup table "$n" 2>/dev/null) || continue # no mapping at all
		[[ $t != *:logon:* ]] || return 1
	done
}
stop_agent() {
	kill "$AGENT"
	wait "$AGENT" 2>/dev/null || true
}
cleanup() {
	local rc=$? n len
	kill -9 "${AGENT:-}" "${WRITER:-}" "${STANDBY:-}" 2>/dev/null || true
	[ "$rc" -ne 0 ] || return 0
	# A failure may leave a volume locked: suspended, its file system's dirty pages held.
	# The harness's final sync would wait forever; an error table lets it end.
	for n in g1 d1; do
		[ "$(dmsetup info -c --noheadings -o suspended "$n" 2>/dev/null)" = Suspended ] || continue
		len=$(dmsetup table "$n" | awk '{ s += $2 } END { print s }')
		dmsetup load "$n" --table "0 $len error" && dmsetup resume "$n" || true
	done
}
trap cleanup EXIT

# The agent's probe is a Decrypt: a fault on Decrypt is an outage as the agent sees it.
faults_left() { emulator_ctl GET faults | jq '.faults | length'; }
# A warm stand-by emulator on the same state and address (--standby): the KMS comes back
# the moment the test says so, not after the emulator's start-up (~25 s in the guest).
start_standby() {
	"$EMULATOR" --standby --listen "$KMS_LISTEN" --state "$WORK/kms.json" \
		--audit-log "$WORK/audit.log" >"$WORK/standby.out" 2>"$WORK/standby.err" &
	STANDBY=$!
}
kms_back() {
	local what
	for what in 'standing by' 'listening on'; do
		for _ in $(seq 1200); do
			grep -q "$what" "$WORK/standby.out" && break
			kill -0 "$STANDBY" 2>/dev/null || { cat "$WORK/standby.err" >&2; fail "the stand-by KMS died"; }
			sleep 0.1
		done
		grep -q "$what" "$WORK/standby.out" || fail "the stand-by KMS is not $what"
		[ "$what" = 'listening on' ] || kill -USR1 "$STANDBY"
	done
	KMS_PID=$STANDBY
}

step "key G reaches this host through a grant only; key D is an ordinary key"
start_kms
policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/customer-admin"},"Action":"kms:*","Resource":"*"}]}'
KEY_G=$(kms_as customer CreateKey "{\"Description\":\"grant only\",\"Policy\":$(jq -Rs . <<<"$policy")}" | json_get KeyMetadata.Arn)
kms_as customer CreateAlias "{\"AliasName\":\"alias/g\",\"TargetKeyId\":\"$KEY_G\"}" >/dev/null
KEY_D=$(create_key alias/d)
expect_exit 3 "without a grant, this host cannot use key G" $DMBYOK format /dev/vda --key alias/g --quiet
grant() {
	kms_as customer CreateGrant "{\"KeyId\":\"$KEY_G\",\"GranteePrincipal\":\"$HOST_ROLE\",\"Operations\":[\"Decrypt\",\"GenerateDataKey\",\"ReEncryptFrom\",\"ReEncryptTo\",\"DescribeKey\"]}" |
		json_get GrantId
}
GRANT=$(grant)
check "format /dev/vda under key G (through the grant)" $DMBYOK format /dev/vda --key alias/g --quiet
check "open it as g1" $DMBYOK open /dev/vda g1 --quiet
check "format /dev/vdb under key D" $DMBYOK format /dev/vdb --key alias/d --quiet
check "open it as d1" $DMBYOK open /dev/vdb d1 --quiet
mkfs.ext4 -q /dev/mapper/g1
mount /dev/mapper/g1 "$MNT"
start_writer "$MNT/log"

step "the agent starts"
start_agent "$WORK/agent.log"
wait_answers 0 ok 1 30 "start"
for n in g1 d1; do check "$n is active under the agent" test "$(state $n)" = active; done
check "an active mapping's table names its key (what the no-key checks look for)" key_in_kernel g1
start_standby # loads while the next steps run

step "the grant is revoked and given again, while D's probes fail every transient way"
D_OUT=$(mark)
# Three faults of each kind, one probe's worth (3 attempts with its retries; libcurl also
# resends once when a reused connection is reset), added at once: the outage lasts through
# G's steps.
aws_fault "$(for kind in throttle http500 http503 reset internal dependency_timeout key_unavailable; do
	echo "{\"operation\":\"Decrypt\",\"fault\":\"$kind\",\"count\":3,\"key_id\":\"$KEY_D\"}"
done | jq -sc .)"
from=$(mark)
kms_as customer RevokeGrant "{\"KeyId\":\"$KEY_G\",\"GrantId\":\"$GRANT\"}" >/dev/null
t=$(wait_done "$from" Locked "$KEY_G" 30 "grant revoked")
echo "grant revoked -> g1 locked in $t s"
check "g1 is locked" test "$(state g1)" = locked
check "the probes were denied (AccessDeniedException)" logged_since "$from" AccessDeniedException
check "the agent decided: revoked, lock" logged_since "$from" "Key $KEY_G: revoked"
check "no key of g1 is in kernel memory" no_key_in_kernel g1
A1=$(acked); sleep 1; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"
from=$(mark)
GRANT=$(grant)
t=$(wait_done "$from" Restored "$KEY_G" 30 "granted again")
echo "granted again -> g1 active in $t s"
check "g1 is active" test "$(state g1)" = active
check "the writer goes on" wait_writer "$A2" 30
for _ in $(seq 120); do [ "$(faults_left)" -eq 0 ] && break; sleep 1; done
check "D's probes met all 21 faults" test "$(faults_left)" -eq 0
wait_answers "$(mark)" ok 1 30 "after D's outage" "$KEY_D"
for e in ThrottlingException "HTTP status 500" "HTTP status 503" "reset by peer" \
	KMSInternalException DependencyTimeoutException KeyUnavailableException; do
	logged_since "$D_OUT" "$e" || { since "$D_OUT" >&2; fail "no probe of D met \"$e\""; }
done
check "D's outage: $(count_since "$D_OUT" "Probe of $KEY_D: kms-unreachable in") transient answers, no decision or alert about D" \
	no_decision_since "$D_OUT" "$KEY_D"
check "d1 (key D) is active" test "$(state d1)" = active

step "D's deletion is scheduled, cancelled, the key enabled, while G's probe gets no answer"
G_OUT=$(mark)
A0=$(acked)
# The client gives up on an attempt after 10 s, on the probe after 3 attempts: this probe
# hangs for 30 check intervals, through all of D's revocation and restore.
aws_fault "{\"operation\":\"Decrypt\",\"fault\":\"timeout\",\"count\":3,\"latency_ms\":12000,\"key_id\":\"$KEY_G\"}"
from=$(mark)
kms_as customer ScheduleKeyDeletion "{\"KeyId\":\"$KEY_D\",\"PendingWindowInDays\":7}" >/dev/null
t=$(wait_done "$from" Locked "$KEY_D" 30 "deletion scheduled")
echo "deletion scheduled -> d1 locked in $t s"
check "d1, which nothing holds open, is torn down" test "$(state d1)" = torn-down
check "the probes met a key pending deletion (KMSInvalidStateException)" \
	logged_since "$from" KMSInvalidStateException
check "the agent decided: revoked, lock" logged_since "$from" "Key $KEY_D: revoked"
check "no key of d1 is in kernel memory" no_key_in_kernel d1
kms_as customer CancelKeyDeletion "{\"KeyId\":\"$KEY_D\"}" >/dev/null
check "key D is Disabled after the cancellation" \
	test "$(kms_as customer DescribeKey "{\"KeyId\":\"$KEY_D\"}" | json_get KeyMetadata.KeyState)" = Disabled
from=$(mark)
wait_log "$from" "DisabledException" 1 30 || { since "$from"; fail "the agent did not probe the Disabled key"; }
check "d1 stays torn down while key D is Disabled" test "$(state d1)" = torn-down
from=$(mark)
kms_as customer EnableKey "{\"KeyId\":\"$KEY_D\"}" >/dev/null
t=$(wait_done "$from" Restored "$KEY_D" 30 "key enabled")
echo "key enabled -> d1 active in $t s"
check "d1 is active" test "$(state d1)" = active
wait_answers "$G_OUT" kms-unreachable 1 90 "G's time-out" "$KEY_G"
took=$(since "$G_OUT" | awk -v p="Probe of $KEY_G: kms-unreachable in" 'index($0, p) && !t { t = $(NF - 1) } END { print t + 0 }')
check "G's probe ran into the client's time-out ($took ms)" test "$took" -ge 10000
check "the probe says it timed out" logged_since "$G_OUT" "timed out"
check "no decision or alert about G through it" no_decision_since "$G_OUT" "$KEY_G"
check "g1 is active" test "$(state g1)" = active
check "the writer went on through it ($A0 -> $(acked))" test "$(acked)" -gt "$A0"

step "the KMS process stops: nothing is locked; it comes back"
from=$(mark)
A0=$(acked)
stop_kms
wait_answers "$from" kms-unreachable 2 60 "KMS stopped"
check "the probes could not connect" logged_since "$from" "Failed to connect"
kms_back
start_standby # for the fail-closed step
wait_answers "$(mark)" ok 1 30 "KMS back"
check "no decision or alert while the KMS was gone" no_decision_since "$from"
for n in g1 d1; do check "$n is active" test "$(state $n)" = active; done
check "the writer went on ($A0 -> $(acked))" test "$(acked)" -gt "$A0"
stop_agent

step "broken host credentials raise an alert and lock nothing"
creds() { # creds WHAT LOG ACCESS-KEY SECRET [SESSION-TOKEN]
	local what=$1 n
	AWS_ACCESS_KEY_ID=$3 AWS_SECRET_ACCESS_KEY=$4 AWS_SESSION_TOKEN=${5:-} \
		start_agent "$WORK/$2"
	wait_answers 0 credentials 2 60 "$what"
	stop_agent
	for n in g1 d1; do check "$what: $n stays active" test "$(state $n)" = active; done
	check "$what: one alert per key, naming the credentials" \
		test "$(count_since 0 "This host's KMS credentials fail")" -eq 2
	grep -m 1 -F "This host's KMS credentials fail" "$AGENT_LOG"
	check "$what: no lock and no state change" \
		test -z "$(decisions_since 0 | grep -v 'credentials fail' || true)"
}
creds "a wrong secret key" agent-badkey.log AKIDHOST000000000001 not-the-host-secret
creds "an expired session" agent-expired.log AKIDEXPIRED000000001 expiredsecret expired-token

step "--fail-closed-after 5: the KMS gone that long locks, its return restores"
start_agent "$WORK/agent-fail-closed.log" --fail-closed-after 5
wait_answers 0 ok 1 30 "fail-closed start"
from=$(mark)
stop_kms
t=$(wait_done "$from" Locked "$KEY_G" 30 "fail-closed")
echo "KMS stopped -> g1 locked in $t s (fail-closed after 5 s)"
wait_done "$from" Locked "$KEY_D" 30 "fail-closed" >/dev/null
check "g1 is locked" test "$(state g1)" = locked
check "d1 is torn down" test "$(state d1)" = torn-down
check "the agent says fail-closed, for both keys" \
	test "$(count_since "$from" "(fail-closed): no good answer")" -eq 2
check "no key of either volume is in kernel memory" no_key_in_kernel g1 d1
A1=$(acked); sleep 1; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"
from=$(mark)
kms_back
t=$(wait_done "$from" Restored "$KEY_G" 30 "KMS back")
echo "KMS back -> g1 active in $t s"
wait_done "$from" Restored "$KEY_D" 30 "KMS back" >/dev/null
for n in g1 d1; do check "$n is active" test "$(state $n)" = active; done
check "the writer goes on" wait_writer "$A2" 30

step "no acknowledged write was lost"
stop_writer
stop_agent
check "the file system is unmounted" umount "$MNT"
check "close g1" $DMBYOK close g1 --quiet
check "reopen g1" $DMBYOK open /dev/vda g1 --quiet
mount -o ro /dev/mapper/g1 "$MNT"
check_acked_survived "$MNT/log" "revocations, outages and restores"
umount "$MNT"
for n in g1 d1; do $DMBYOK close $n --quiet; done
echo "--- what the agents decided and alerted"
for AGENT_LOG in "$WORK"/agent{,-badkey,-expired,-fail-closed}.log; do
	echo "- $(basename "$AGENT_LOG")"
	decisions_since 0
done
stop_kms
finish
