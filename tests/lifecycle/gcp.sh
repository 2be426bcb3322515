#!/usr/bin/env bash
# A volume under a Google Cloud KMS key, on real dm-crypt: format names the key by its
# resource name, the token says "gcp", the version and the location; open/close/reopen keep
# the data and the table holds only a keyring reference; a token copied to another volume
# is refused; dmbyokd locks the volume when the key version is disabled or this host's IAM
# binding is removed, restores it when they are back, rides out an emulator outage, and no
# acknowledged write is lost. The Cloud KMS emulator serves KMS and the OAuth token endpoint
# over TLS on the guest's loopback; dmbyok authenticates with a service-account JSON key.
. "$(dirname "$0")/lib.sh"
A=/dev/vda B=/dev/vdb
MNT=$WORK/mnt
mkdir -p "$MNT"
GCP_DIR=$DMBYOK_SOURCE_DIR/tests/kms-emulator-gcp
GCP_LISTEN=127.0.0.1:48223 # fixed: the emulator is stopped and restarted under the agent
HOST_SA=dmbyok-host@dmbyok-test.iam.gserviceaccount.com
HOST_MEMBER=serviceAccount:$HOST_SA
KEY=projects/dmbyok-test/locations/europe-west1/keyRings/volumes/cryptoKeys/orders
VERSION=$KEY/cryptoKeyVersions/1

cleanup() { kill -9 ${AGENT:-} ${WRITER:-} ${GCP_PID:-} ${STANDBY:-} 2>/dev/null || true; }
trap cleanup EXIT

# spawn_gcp NAME [--standby]: an emulator over TLS on $GCP_LISTEN, its state and audit log
# under $WORK, its output in $WORK/NAME.out; sets SPAWNED. --standby: loaded (Python starts
# slowly under TCG), binds on SIGUSR1, so that it takes over a stopped one's address at once.
spawn_gcp() {
	local name=$1
	shift
	"$GCP_DIR/gcp-kms-emulator" --listen "$GCP_LISTEN" --state "$WORK/gcp.json" \
		--audit-log "$WORK/gcp-audit.log" --tls-cert "$WORK/server.pem" \
		--tls-key "$WORK/server.key" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	SPAWNED=$!
}
gcp_says() { # gcp_says NAME PID LINE: wait for that line of the emulator's
	for _ in $(seq 1200); do
		grep -q "$3" "$WORK/$1.out" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || { cat "$WORK/$1.err" >&2; fail "the emulator $1 died"; }
		sleep 0.1
	done
	fail "the emulator $1 never said '$3'"
}
# Cloud KMS's REST API as some bearer token (admin-token: the key's owner; host-token: this
# host, as a test oracle), and the emulator's control API. curl, not gcp-emulatorctl: a
# Python start costs seconds under TCG.
gcp_call() { # gcp_call TOKEN METHOD PATH [BODY]
	curl -sS --fail-with-body --cacert "$WORK/ca.pem" -X "$2" -H "Authorization: Bearer $1" \
		-H 'Content-Type: application/json' ${4:+-d "$4"} "$GCP_URL/$3"
}
version_state() { # version_state ENABLED|DISABLED: as gcloud kms keys versions enable/disable
	gcp_call admin-token PATCH "v1/$VERSION?updateMask=state" "{\"state\":\"$1\"}" >/dev/null
}
# key_binding add|remove ROLE: this host's binding on the key, as gcloud's
# add-/remove-iam-policy-binding do it (read, edit, write back with the etag).
key_binding() {
	local policy
	policy=$(gcp_call admin-token GET "v1/$KEY:getIamPolicy") || return 1
	policy=$(jq -c --arg op "$1" --arg r "$2" --arg m "$HOST_MEMBER" '
		.bindings = ([(.bindings // [])[] | select(.role != $r)] +
			[{role: $r, members: (([(.bindings // [])[] | select(.role == $r) | .members[]] - [$m]) +
				(if $op == "add" then [$m] else [] end))} | select(.members != [])])' <<<"$policy") ||
		return 1
	gcp_call admin-token POST "v1/$KEY:setIamPolicy" "{\"policy\":$policy}" >/dev/null
}
ENCDEC=roles/cloudkms.cryptoKeyEncrypterDecrypter
quietly() { "$@" >/dev/null; }
# How many calls of OPERATION the emulator answered (any result).
calls_of() { jq -r .operation "$WORK/gcp-audit.log" | grep -cx "$1" || true; }
agent_json() { $DMBYOK status "$1" --json | jq -c .agent; }
locked_or_torn_down() { case $(state "$1") in locked | torn-down) return 0 ;; esac; return 1; }

step "Cloud KMS emulator over TLS, a key granted to this host on the key only"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj "/CN=dmbyok test CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
	2>/dev/null || fail "cannot make the test CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
	-keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null || fail "server key"
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
	-CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null ||
	fail "cannot sign the server certificate"
spawn_gcp gcp1
GCP_PID=$SPAWNED
gcp_says gcp1 "$GCP_PID" 'listening on'
GCP_URL=https://$GCP_LISTEN
echo "emulator at $GCP_URL (up at $(elapsed) s)"
# The project-level grants of a fresh emulator would outlive a key binding's removal.
gcp_call admin-token POST _emulator/project-policy \
	'{"bindings":[{"role":"roles/owner","members":["user:admin@example.com"]}]}' >/dev/null ||
	fail "cannot set the project policy"
RING=${KEY%/cryptoKeys/*}
check "create the key ring" quietly gcp_call admin-token POST "v1/${RING%/keyRings/*}/keyRings?keyRingId=volumes" '{}'
check "create the key; version 1 is its enabled primary" test "$(gcp_call admin-token POST \
	"v1/$RING/cryptoKeys?cryptoKeyId=orders" '{"purpose":"ENCRYPT_DECRYPT"}' |
	jq -r '.primary.name + " " + .primary.state')" = "$VERSION ENABLED"
GRANTS="[{\"role\":\"$ENCDEC\",\"members\":[\"$HOST_MEMBER\"]},{\"role\":\"roles/cloudkms.viewer\",\"members\":[\"$HOST_MEMBER\"]}]"
check "grant this host encrypt/decrypt and viewer on the key" test "$(gcp_call admin-token POST \
	"v1/$KEY:setIamPolicy" "{\"policy\":{\"bindings\":$GRANTS}}" | jq -c .bindings)" = "$GRANTS"
(umask 077 && gcp_call admin-token POST _emulator/service-account-keys "{\"email\":\"$HOST_SA\"}" \
	>"$WORK/sa.json") || fail "cannot make the service-account key"
check "a service-account JSON key whose token_uri is the emulator" \
	quietly jq -e ".type == \"service_account\" and .client_email == \"$HOST_SA\" and (.token_uri | startswith(\"$GCP_URL\"))" "$WORK/sa.json"
mkdir -p "$WORK/gcloud"
export CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS=$GCP_URL/
export CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=$WORK/ca.pem
export GOOGLE_APPLICATION_CREDENTIALS=$WORK/sa.json CLOUDSDK_CONFIG=$WORK/gcloud
unset GCE_METADATA_HOST GCE_METADATA_ROOT

step "format under the Cloud KMS key"
check "format succeeds" $DMBYOK format $A --key "$KEY" --context tenant=acme --quiet
$DMBYOK dump $A --json >"$WORK/dump.json"
jq -c .token "$WORK/dump.json"
check "dump --json: kms is gcp" test "$(jq -r .token.kms "$WORK/dump.json")" = gcp
check "dump --json: the key as named" test "$(jq -r .token.key_id "$WORK/dump.json")" = "$KEY"
check "dump --json: the wrapping key version" test "$(jq -r .token.key_arn "$WORK/dump.json")" = "$VERSION"
check "dump --json: the location as region" test "$(jq -r .token.region "$WORK/dump.json")" = europe-west1
check "the emulator saw the host's JWT grant and its Encrypt" bash -c \
	"jq -se 'any(.operation == \"Token\" and .result == \"OK\") and
	         any(.operation == \"Encrypt\" and .result == \"OK\" and .principal == \"$HOST_MEMBER\")' \
	 '$WORK/gcp-audit.log' >/dev/null"

step "open, data through the mapping, close, reopen"
check "open succeeds" $DMBYOK open $A orders --quiet
TABLE=$(dmsetup table orders)
echo "$TABLE"
check "the table names a logon key in the keyring, not key bytes" grep -q ':64:logon:dmbyok:' <<<"$TABLE"
# Oracle: the DEK, unwrapped by the emulator for the host with the token's context as AAD.
TOKEN=$(token_json $A)
AAD=$(echo "$TOKEN" | jq -cjS .context | base64 -w0)
gcp_call host-token POST "v1/$KEY:decrypt" \
	"{\"ciphertext\":\"$(echo "$TOKEN" | json_get ciphertext)\",\"additionalAuthenticatedData\":\"$AAD\"}" |
	jq -r .plaintext | base64 -d >"$WORK/dek"
check "the oracle unwrapped a 64-byte DEK" test "$(stat -c %s "$WORK/dek")" -eq 64
DEK_HEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n')
rm -f "$WORK/dek"
check "dmsetup table --showkeys has no key hex" bash -c "! dmsetup table --showkeys orders | grep -qi $DEK_HEX"
check "no dmbyok key is left in any keyring" bash -c "! grep -q 'dmbyok:' /proc/keys"
MARKER="dmbyok-gcp-plaintext-$RANDOM$RANDOM"
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

step "a token copied to another volume is refused"
check "format $B under the same key" $DMBYOK format $B --key "$KEY" --quiet
token_json $A | jq -c '.keyslots = ["0"]' >"$WORK/copied.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/copied.json" $B
before=$(header_sum $B) maps=$(dmsetup ls) decrypts=$(calls_of Decrypt)
expect_exit 6 "open of $B with $A's token" $DMBYOK open $B other
check "refused before any KMS call" test "$(calls_of Decrypt)" = "$decrypts"
check "the header is unchanged" test "$(header_sum $B)" = "$before"
check "the mappings are unchanged" test "$(dmsetup ls)" = "$maps"

step "the agent watches the key; a writer on ext4 on the mapping"
mkfs.ext4 -q /dev/mapper/orders
mount /dev/mapper/orders "$MNT"
start_writer "$MNT/log"
start_agent --check-interval 1 --restore-interval 1
spawn_gcp gcp2 --standby # for the outage below, loading meanwhile
STANDBY=$SPAWNED
check "the agent probes the key version and finds it answering" wait_quietly 30 eval \
	"$DMBYOK status orders --json | jq -e '.agent.key_arn == \"$VERSION\" and .agent.state == \"active\" and .agent.probes >= 1 and .agent.last_probe_class == \"ok\"'"
agent_json orders

step "the customer disables the key version"
version_state DISABLED
t=$(wait_for 60 locked_or_torn_down orders) || { cat "$WORK/agent.log"; fail "not locked"; }
echo "TIMING: version disabled -> orders $(state orders) in $t s"
agent_json orders
check "the agent's view: locked because the key was revoked" bash -c \
	"$DMBYOK status orders --json | jq -e '.agent.lock_reason == \"revoked\" and .agent.last_probe_class == \"key-revoked\"' >/dev/null"
check "the table no longer names a key" bash -c "! dmsetup table orders | grep -q ':logon:'"
A1=$(acked); sleep 2; A2=$(acked)
check "the writer is frozen ($A1 -> $A2)" test "$A1" = "$A2"

step "the customer enables it again"
version_state ENABLED
t=$(wait_state orders active 60) || { cat "$WORK/agent.log"; fail "not restored"; }
echo "TIMING: version enabled -> orders active in $t s"
check "the writer goes on" wait_quietly 20 eval "[ \$(acked) -gt $A2 ]"

step "a 10 s emulator outage locks nothing"
gcp_says gcp2 "$STANDBY" 'standing by'
probes=$($DMBYOK status orders --json | jq .agent.probes)
t_down=$(date +%s%N)
kill "$GCP_PID" && wait "$GCP_PID" 2>/dev/null || true
A3=$(acked) seen=
# 10 s without the KMS: the volume stays active, and the agent's probes see the outage.
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
GCP_PID=$STANDBY STANDBY=
gcp_says gcp2 "$GCP_PID" 'listening on'
echo "TIMING: the emulator was down for $(awk -v a="$t_down" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}') s"
ok "orders stayed active through the outage"
echo "${seen:-the agent never reported the outage}"
check "the agent probed during the outage and saw the KMS unreachable" test -n "$seen"
check "the writer went on during the outage ($A3 -> $A4)" test "$A4" -gt "$A3"
t=$(wait_for 60 eval "$DMBYOK status orders --json | jq -e '.agent.last_probe_class == \"ok\"'") ||
	{ cat "$WORK/agent.log"; fail "the probes never answered again"; }
echo "TIMING: emulator back -> first good probe in $t s"
check "still active" test "$(state orders)" = active
check "the agent locked only once (the disabled version)" \
	test "$(grep -c 'Locking the .* the customer revoked the key' "$WORK/agent.log")" -eq 1

step "the customer removes this host's IAM binding on the key"
key_binding remove $ENCDEC
t=$(wait_for 60 locked_or_torn_down orders) || { cat "$WORK/agent.log"; fail "not locked"; }
echo "TIMING: IAM binding removed -> orders $(state orders) in $t s"
check "the agent's view: revoked (PERMISSION_DENIED)" bash -c \
	"$DMBYOK status orders --json | jq -e '.agent.lock_reason == \"revoked\" and .agent.last_probe_class == \"key-revoked\"' >/dev/null"
check "the emulator denied the host's Decrypt" bash -c \
	"jq -se 'any(.operation == \"Decrypt\" and .result == \"PERMISSION_DENIED\")' '$WORK/gcp-audit.log' >/dev/null"
key_binding add $ENCDEC
t=$(wait_state orders active 60) || { cat "$WORK/agent.log"; fail "not restored"; }
echo "TIMING: IAM binding restored -> orders active in $t s"
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
kill "$GCP_PID" && wait "$GCP_PID" 2>/dev/null || true
finish
