#!/usr/bin/env bash
# A volume under an Azure Key Vault key, on real dm-crypt: format names the key by its
# identifier (https://dmbyok-test.vault.azure.net/keys/orders), the token says "azure", the
# exact key version and the vault; open/close/reopen keep the data and the table holds only
# a keyring reference; a token copied to another volume is refused before any Key Vault call
# (Key Vault has no AAD: the key check value binds the volume); dmbyokd locks the volume when
# the key is disabled or this host's access policy is removed, restores it when they are
# back, rides out an emulator outage, and no acknowledged write is lost. The Key Vault
# emulator runs on the guest's loopback and is reached as Azure is: through HTTPS_PROXY (its
# CONNECT proxy, TLS verified against a test CA that signs *.vault.azure.net); dmbyok
# authenticates as the VM's managed identity (IMDS, AZURE_POD_IDENTITY_AUTHORITY_HOST).
. "$(dirname "$0")/lib.sh"
A=/dev/vda B=/dev/vdb
MNT=$WORK/mnt
mkdir -p "$MNT"
AZ_DIR=$DMBYOK_SOURCE_DIR/tests/kms-emulator-azure
AZ_LISTEN=127.0.0.1:48224 # fixed: the emulator is stopped and restarted under the agent
PLAIN=http://$AZ_LISTEN
VAULT_HOST=dmbyok-test.vault.azure.net
KEY=https://$VAULT_HOST/keys/orders
MI_OID=7e000000-0000-4000-8000-00000000005a # the VM's system-assigned identity

cleanup() { kill -9 ${AGENT:-} ${WRITER:-} ${AZ_PID:-} ${STANDBY:-} 2>/dev/null || true; }
trap cleanup EXIT

# spawn_az NAME [--standby]: the emulator on $AZ_LISTEN (TLS and plain, and the proxy), its
# state and audit log under $WORK, its output in $WORK/NAME.out; sets SPAWNED. --standby:
# loaded (Python starts slowly under TCG), binds on SIGUSR1, to take over a stopped one.
spawn_az() {
	local name=$1
	shift
	"$AZ_DIR/azure-kv-emulator" --listen "$AZ_LISTEN" --state "$WORK/azure.json" \
		--audit-log "$WORK/azure-audit.log" --tls-cert "$WORK/server.pem" \
		--tls-key "$WORK/server.key" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	SPAWNED=$!
}
az_says() { # az_says NAME PID LINE: wait for that line of the emulator's
	for _ in $(seq 1200); do
		grep -q "$3" "$WORK/$1.out" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || { cat "$WORK/$1.err" >&2; fail "the emulator $1 died"; }
		sleep 0.1
	done
	fail "the emulator $1 never said '$3'"
}
# The emulator's control API (the customer's side: key administration, access policies),
# with curl: a Python start costs seconds under TCG.
az_ctl() { # az_ctl WHAT JSON
	curl -sS --fail-with-body --noproxy '*' -H 'Content-Type: application/json' -d "$2" \
		"$PLAIN/_emulator/$1"
}
key_enabled() { az_ctl enabled "{\"key_id\":\"$KEY\",\"enabled\":$1}" >/dev/null; }
host_policy() { # host_policy grant|remove: the VM identity's access policy on the vault
	local perms=null
	[ "$1" = grant ] && perms='["get","list","wrapKey","unwrapKey"]'
	az_ctl policy "{\"vault\":\"$VAULT_HOST\",\"principal\":\"mi-system\",\"permissions\":$perms}" >/dev/null
}
quietly() { "$@" >/dev/null; }
# How many calls of OPERATION the emulator answered (any result).
calls_of() { jq -r .operation "$WORK/azure-audit.log" | grep -cx "$1" || true; }
agent_json() { $DMBYOK status "$1" --json | jq -c .agent; }
locked_or_torn_down() { case $(state "$1") in locked | torn-down) return 0 ;; esac; return 1; }
b64url() { tr '+/' '-_' | tr -d '='; }
unb64url() { tr -- '-_' '+/' | awk '{ n = length($0) % 4; if (n) $0 = $0 substr("===", 1, 4 - n); print }' | base64 -d; }

step "Key Vault emulator (TLS, CONNECT proxy, IMDS), a key this VM's identity may use"
"$AZ_DIR/make-test-certs" "$WORK" || fail "cannot make the test certificates"
spawn_az az1
AZ_PID=$SPAWNED
az_says az1 "$AZ_PID" 'listening on'
echo "emulator at $PLAIN (up at $(elapsed) s)"
check "create the RSA 2048 key orders" test "$(az_ctl create-key "{\"key_id\":\"$KEY\"}" |
	jq -r '.key.kty + " " + (.attributes.enabled | tostring)')" = "RSA true"
# dmbyok as on an Azure VM with a system-assigned managed identity: nothing but IMDS, and
# the proxy/CA settings that route https://*.vault.azure.net to the emulator.
export HTTPS_PROXY=$PLAIN REQUESTS_CA_BUNDLE=$WORK/ca.pem AZURE_POD_IDENTITY_AUTHORITY_HOST=$PLAIN
unset AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_CLIENT_SECRET AZURE_CLIENT_CERTIFICATE_PATH \
	AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST

step "format under the Key Vault key"
check "format succeeds" $DMBYOK format $A --key "$KEY" --context tenant=acme --quiet
$DMBYOK dump $A --json >"$WORK/dump.json"
jq -c .token "$WORK/dump.json"
VERSION=$(jq -r .token.key_arn "$WORK/dump.json")
check "dump --json: kms is azure" test "$(jq -r .token.kms "$WORK/dump.json")" = azure
check "dump --json: the key as named" test "$(jq -r .token.key_id "$WORK/dump.json")" = "$KEY"
check "dump --json: the exact key version that wrapped ($VERSION)" \
	bash -c "[[ '$VERSION' =~ ^$KEY/[0-9a-f]{32}\$ ]]"
check "dump --json: the vault as region" test "$(jq -r .token.region "$WORK/dump.json")" = $VAULT_HOST
$DMBYOK dump $A | grep -E 'kms:' | tee "$WORK/dump.txt"
check "dump: 'kms: azure, region $VAULT_HOST'" grep -q "azure, region $VAULT_HOST" "$WORK/dump.txt"
check "the emulator saw the VM identity's IMDS token and its WrapKey, through the proxy" bash -c \
	"jq -se 'any(.operation == \"IMDS\" and .result == \"OK\") and
	         any(.operation == \"WrapKey\" and .result == \"OK\" and .principal == \"$MI_OID\" and .via_proxy and .tls)' \
	 '$WORK/azure-audit.log' >/dev/null"

step "open, data through the mapping, close, reopen"
t0=$(date +%s%N)
check "open succeeds" $DMBYOK open $A orders --quiet
echo "TIMING: open (IMDS token, UnwrapKey over TLS through the proxy, table load) took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
TABLE=$(dmsetup table orders)
echo "$TABLE"
check "the table names a logon key in the keyring, not key bytes" grep -q ':64:logon:dmbyok:' <<<"$TABLE"
# Oracle: the DEK, unwrapped by the emulator for this VM's identity on the token's version.
TOKEN=$(token_json $A)
MI_TOKEN=$(curl -sS --noproxy '*' -H Metadata:true \
	"$PLAIN/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net" | jq -r .access_token)
curl -sS --fail-with-body --cacert "$WORK/ca.pem" --proxy "$PLAIN" -H "Authorization: Bearer $MI_TOKEN" \
	-H 'Content-Type: application/json' \
	-d "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$(echo "$TOKEN" | json_get ciphertext | base64 -d | base64 -w0 | b64url)\"}" \
	"$VERSION/unwrapkey?api-version=7.4" | jq -r .value | unb64url >"$WORK/dek"
check "the oracle unwrapped a 64-byte DEK" test "$(stat -c %s "$WORK/dek")" -eq 64
DEK_HEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n')
rm -f "$WORK/dek"
check "dmsetup table --showkeys has no key hex" bash -c "! dmsetup table --showkeys orders | grep -qi $DEK_HEX"
check "no dmbyok key is left in any keyring" bash -c "! grep -q 'dmbyok:' /proc/keys"
MARKER="dmbyok-azure-plaintext-$RANDOM$RANDOM"
{ for i in $(seq 20000); do echo "$MARKER line $i"; done; head -c 7M /dev/urandom; } >"$WORK/blob"
SUM=$(sha256sum <"$WORK/blob")
check "write $(($(stat -c %s "$WORK/blob") >> 20)) MiB through /dev/mapper/orders, fsync'd" \
	dd if="$WORK/blob" of=/dev/mapper/orders bs=1M conv=fsync status=none
check "close" $DMBYOK close orders --quiet
check "the raw disk does not hold the plaintext" bash -c "! grep -qa '$MARKER' $A"
check "reopen" $DMBYOK open $A orders --quiet
check "the data read back is identical" \
	test "$(head -c "$(stat -c %s "$WORK/blob")" /dev/mapper/orders | sha256sum)" = "$SUM"
$DMBYOK status orders --json >"$WORK/status.json"
check "status --json: active, the key and its version" \
	quietly jq -e ".state == \"active\" and .key_id == \"$KEY\" and .key_arn == \"$VERSION\"" "$WORK/status.json"
check "lock" $DMBYOK lock orders --quiet
t0=$(date +%s%N)
check "unlock" env DMBYOK_LOG_LEVEL=debug $DMBYOK unlock orders 2>"$WORK/unlock.err"
UNLOCK_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "TIMING: unlock wall time (dmbyok unlock: KMS unwrap + key set + resume) $UNLOCK_MS ms"
# Where it went: dmbyok's own audit line for the Decrypt, and the emulator's side of it.
KMS_MS=$(sed -n 's/.*KMS Decrypt .*: ok in \([0-9]*\) ms.*/\1/p' "$WORK/unlock.err" | tail -n 1)
EMU=$(jq -rs '[.[] | select(.operation == "UnwrapKey" or .operation == "IMDS")] | .[-2:] |
	map(.operation + " " + (.latency_ms | tostring) + " ms") | join(", ")' "$WORK/azure-audit.log")
echo "TIMING: of which the KMS Decrypt call ${KMS_MS:-?} ms (emulator side: $EMU)"
check "the data is still there after lock/unlock" \
	test "$(head -c "$(stat -c %s "$WORK/blob")" /dev/mapper/orders | sha256sum)" = "$SUM"

step "a token copied to another volume is refused (Key Vault binds nothing: the key check value does)"
check "format $B under the same key" $DMBYOK format $B --key "$KEY" --quiet
token_json $A | jq -c '.keyslots = ["0"]' >"$WORK/copied.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/copied.json" $B
before=$(header_sum $B) maps=$(dmsetup ls) unwraps=$(calls_of UnwrapKey)
expect_exit 6 "open of $B with $A's token" $DMBYOK open $B other
check "refused before any Key Vault call" test "$(calls_of UnwrapKey)" = "$unwraps"
check "the header is unchanged" test "$(header_sum $B)" = "$before"
check "the mappings are unchanged" test "$(dmsetup ls)" = "$maps"

step "doctor --key: the Key Vault checks"
$DMBYOK doctor --key "$KEY" | tee "$WORK/doctor.txt" | grep -E 'DescribeKey|GenerateDataKey|Decrypt|ReEncrypt'
check "doctor: DescribeKey names the current version, Enabled" grep -q "^ok   DescribeKey .*$KEY/[0-9a-f]\{32\} is Enabled" "$WORK/doctor.txt"

step "rotation: a new key version, rewrap moves the volume to it (ReEncrypt, DEK in locked memory)"
az_ctl rotate "{\"key_id\":\"$KEY\"}" >/dev/null || fail "cannot rotate the key"
check "rewrap while open" $DMBYOK rewrap $A
OLD_VERSION=$VERSION
VERSION=$(token_json $A | json_get key_arn)
check "the token records the new version ($VERSION)" bash -c "[ '$VERSION' != '$OLD_VERSION' ] && [[ '$VERSION' =~ ^$KEY/[0-9a-f]{32}\$ ]]"
check "the rewrap unwrapped under the old version and wrapped under the new one" bash -c \
	"jq -se 'any(.operation == \"WrapKey\" and (.path | contains(\"${VERSION##*/}\")))' '$WORK/azure-audit.log' >/dev/null"
check "close and reopen under the new version" bash -c "$DMBYOK close orders --quiet && $DMBYOK open $A orders --quiet"
check "the data is intact" \
	test "$(head -c "$(stat -c %s "$WORK/blob")" /dev/mapper/orders | sha256sum)" = "$SUM"

step "the agent watches the key; a writer on ext4 on the mapping"
mkfs.ext4 -q /dev/mapper/orders
mount /dev/mapper/orders "$MNT"
start_writer "$MNT/log"
start_agent --check-interval 1 --restore-interval 1
spawn_az az2 --standby # for the outage below, loading meanwhile
STANDBY=$SPAWNED
check "the agent probes the key version and finds it answering" wait_quietly 30 eval \
	"$DMBYOK status orders --json | jq -e '.agent.key_arn == \"$VERSION\" and .agent.state == \"active\" and .agent.probes >= 1 and .agent.last_probe_class == \"ok\"'"
agent_json orders

step "the customer disables the key"
key_enabled false
t=$(wait_for 60 locked_or_torn_down orders) || { cat "$WORK/agent.log"; fail "not locked"; }
echo "TIMING: key disabled -> orders $(state orders) in $t s"
LOCK1=$t
agent_json orders
check "the agent's view: locked because the key was revoked" bash -c \
	"$DMBYOK status orders --json | jq -e '.agent.lock_reason == \"revoked\" and .agent.last_probe_class == \"key-revoked\"' >/dev/null"
check "the emulator answered Forbidden/KeyDisabled" bash -c \
	"jq -se 'any(.operation == \"UnwrapKey\" and .result == \"Forbidden/KeyDisabled\")' '$WORK/azure-audit.log' >/dev/null"
check "the table no longer names a key" bash -c "! dmsetup table orders | grep -q ':logon:'"
A1=$(acked); sleep 2; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"

step "the customer enables it again"
key_enabled true
t=$(wait_state orders active 60) || { cat "$WORK/agent.log"; fail "not restored"; }
echo "TIMING: key enabled -> orders active in $t s"
RESTORE1=$t
check "the writer goes on" wait_quietly 20 eval "[ \$(acked) -gt $A2 ]"

step "a 10 s emulator outage locks nothing"
az_says az2 "$STANDBY" 'standing by'
probes=$($DMBYOK status orders --json | jq .agent.probes)
t_down=$(date +%s%N)
kill "$AZ_PID" && wait "$AZ_PID" 2>/dev/null || true
A3=$(acked) seen=
while [ $(($(date +%s%N) - t_down)) -lt 10000000000 ]; do
	$DMBYOK status orders --json >"$WORK/outage.json"
	[ "$(jq -r .state "$WORK/outage.json")" = active ] ||
		{ cat "$WORK/outage.json" "$WORK/agent.log"; fail "orders is not active during the outage"; }
	jq -e ".agent.probes > $probes and .agent.last_probe_class == \"kms-unreachable\"" \
		"$WORK/outage.json" >/dev/null && seen=$(jq -c .agent "$WORK/outage.json")
	sleep 0.5
done
A4=$(acked)
kill -USR1 "$STANDBY"
AZ_PID=$STANDBY STANDBY=
az_says az2 "$AZ_PID" 'listening on'
echo "TIMING: the emulator was down for $(awk -v a="$t_down" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}') s"
ok "orders stayed active through the outage"
echo "${seen:-the agent never reported the outage}"
check "the agent probed during the outage and saw the KMS unreachable" test -n "$seen"
check "the writer went on during the outage ($A3 -> $A4)" test "$A4" -gt "$A3"
t=$(wait_for 60 eval "$DMBYOK status orders --json | jq -e '.agent.last_probe_class == \"ok\"'") ||
	{ cat "$WORK/agent.log"; fail "the probes never answered again"; }
echo "TIMING: emulator back -> first good probe in $t s"
check "still active" test "$(state orders)" = active
check "the agent locked only once (the disabled key)" \
	test "$(grep -c 'Locking the .* the customer revoked the key' "$WORK/agent.log")" -eq 1

step "the customer removes this VM's access policy"
host_policy remove
t=$(wait_for 60 locked_or_torn_down orders) || { cat "$WORK/agent.log"; fail "not locked"; }
echo "TIMING: access policy removed -> orders $(state orders) in $t s"
LOCK2=$t
check "the agent's view: revoked (Forbidden/AccessDenied)" bash -c \
	"$DMBYOK status orders --json | jq -e '.agent.lock_reason == \"revoked\" and .agent.last_probe_class == \"key-revoked\"' >/dev/null"
check "the emulator denied the VM identity's UnwrapKey" bash -c \
	"jq -se 'any(.operation == \"UnwrapKey\" and .result == \"Forbidden/AccessDenied\" and .principal == \"$MI_OID\")' '$WORK/azure-audit.log' >/dev/null"
host_policy grant
t=$(wait_state orders active 60) || { cat "$WORK/agent.log"; fail "not restored"; }
echo "TIMING: access policy restored -> orders active in $t s"
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
echo "SUMMARY: unlock ${UNLOCK_MS} ms; agent lock after disable ${LOCK1} s, after policy removal ${LOCK2} s; restore after enable ${RESTORE1} s, after policy grant ${RESTORE2} s"
kill "$AZ_PID" && wait "$AZ_PID" 2>/dev/null || true
finish
