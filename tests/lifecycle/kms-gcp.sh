# shellcheck shell=bash disable=SC2034 # the settings are for the scenarios (use_kms gcp)
# The KMS adapter for Google Cloud KMS (use_kms gcp; the interface is in lib.sh). The emulator
# serves Cloud KMS and the OAuth token endpoint over TLS (test CA); dmbyok authenticates with
# a service-account JSON key. A key is named by its resource name; the host may use it
# through IAM bindings on that key only; its version 1 is the primary. The customer disables
# the key version, or removes the host's binding.
GCP_EMULATOR=$DMBYOK_SOURCE_DIR/tests/kms-emulator-gcp/gcp-kms-emulator
GCP_LISTEN=127.0.0.1:48223 # fixed: the KMS is stopped and restarted under a running agent
GCP_URL=https://$GCP_LISTEN
GCP_RING=projects/dmbyok-test/locations/europe-west1/keyRings/volumes
HOST_SA=dmbyok-host@dmbyok-test.iam.gserviceaccount.com
KMS_HOST_PRINCIPAL=serviceAccount:$HOST_SA
kms_region() { echo europe-west1; } # the key ring's location
KMS_UNWRAP_OP=Decrypt KMS_AUTH_OP=Token KMS_WRAP_OP=Encrypt
KMS_DENIED_RESULT=PERMISSION_DENIED
KMS_DISABLE_WHAT="key version" KMS_DENY_WHAT="IAM binding"
KMS_UNREACHABLE=(CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS=https://127.0.0.1:9/)
KMS_BAD_CREDENTIALS=(GOOGLE_APPLICATION_CREDENTIALS="$WORK/sa-deleted.json")
KMS_AUDIT=$WORK/gcp-audit.log
ENCDEC=roles/cloudkms.cryptoKeyEncrypterDecrypter

# Cloud KMS's REST API as a bearer token (admin-token: the keys' owner; host-token: this
# host, for the oracle), and the emulator's control API; curl: a Python start costs seconds.
gcp_call() { # gcp_call TOKEN METHOD PATH [BODY]
	curl -sS --fail-with-body --cacert "$WORK/ca.pem" -X "$2" -H "Authorization: Bearer $1" \
		-H 'Content-Type: application/json' ${4:+-d "$4"} "$GCP_URL/$3"
}
gcp_spawn() {
	"$GCP_EMULATOR" --listen "$GCP_LISTEN" --state "$WORK/gcp.json" --audit-log "$KMS_AUDIT" \
		--tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" >"$WORK/gcp.out" 2>"$WORK/gcp.err" &
	KMS_PID=$!
	for _ in $(seq 1200); do
		grep -q 'listening on' "$WORK/gcp.out" 2>/dev/null && return 0
		kill -0 "$KMS_PID" 2>/dev/null || { cat "$WORK/gcp.err" >&2; fail "the Cloud KMS emulator died"; }
		sleep 0.1
	done
	fail "the Cloud KMS emulator never became ready"
}
kms_start() {
	"$DMBYOK_SOURCE_DIR/tests/kms-emulator-azure/make-test-certs" "$WORK" ||
		fail "cannot make the test certificates"
	gcp_spawn
	# The project-level grants of a fresh emulator would outlive a key binding's removal.
	gcp_call admin-token POST _emulator/project-policy \
		'{"bindings":[{"role":"roles/owner","members":["user:admin@example.com"]}]}' >/dev/null &&
		gcp_call admin-token POST "v1/${GCP_RING%/keyRings/*}/keyRings?keyRingId=volumes" '{}' >/dev/null ||
		fail "cannot set up the project and its key ring"
	(umask 077 && gcp_call admin-token POST _emulator/service-account-keys "{\"email\":\"$HOST_SA\"}" \
		>"$WORK/sa.json") || fail "cannot make the service-account key"
	# A key the emulator no longer knows: credentials it rejects (invalid_grant).
	(umask 077 && gcp_call admin-token POST _emulator/service-account-keys "{\"email\":\"$HOST_SA\"}" \
		>"$WORK/sa-deleted.json") &&
		gcp_call admin-token DELETE _emulator/service-account-keys \
			"{\"email\":\"$HOST_SA\",\"private_key_id\":\"$(jq -r .private_key_id "$WORK/sa-deleted.json")\"}" >/dev/null ||
		fail "cannot make a deleted service-account key"
	export CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS=$GCP_URL/
	export CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=$WORK/ca.pem
	export GOOGLE_APPLICATION_CREDENTIALS=$WORK/sa.json
	unset GCE_METADATA_HOST GCE_METADATA_ROOT
}
kms_stop() { kill "$KMS_PID" 2>/dev/null && wait "$KMS_PID" 2>/dev/null || true; }
kms_restart() { gcp_spawn; }

# binding add|remove KEY ROLE: the host's binding on the key, as gcloud's
# add-/remove-iam-policy-binding do it (read, edit, write back with the etag).
gcp_binding() {
	local policy
	policy=$(gcp_call admin-token GET "v1/$2:getIamPolicy") || return 1
	policy=$(jq -c --arg op "$1" --arg r "$3" --arg m "$KMS_HOST_PRINCIPAL" '
		.bindings = ([(.bindings // [])[] | select(.role != $r)] +
			[{role: $r, members: (([(.bindings // [])[] | select(.role == $r) | .members[]] - [$m]) +
				(if $op == "add" then [$m] else [] end))} | select(.members != [])])' <<<"$policy") ||
		return 1
	gcp_call admin-token POST "v1/$2:setIamPolicy" "{\"policy\":$policy}" >/dev/null
}
gcp_version_state() { # KEY ENABLED|DISABLED: as gcloud kms keys versions enable/disable
	gcp_call admin-token PATCH "v1/$1/cryptoKeyVersions/1?updateMask=state" "{\"state\":\"$2\"}" >/dev/null
}
kms_new_key() {
	local key=$GCP_RING/cryptoKeys/$1 grants
	[ "$(gcp_call admin-token POST "v1/$GCP_RING/cryptoKeys?cryptoKeyId=$1" '{"purpose":"ENCRYPT_DECRYPT"}' |
		jq -r '.primary.name + " " + .primary.state')" = "$key/cryptoKeyVersions/1 ENABLED" ] ||
		fail "cannot create the key $1"
	grants="[{\"role\":\"$ENCDEC\",\"members\":[\"$KMS_HOST_PRINCIPAL\"]},{\"role\":\"roles/cloudkms.viewer\",\"members\":[\"$KMS_HOST_PRINCIPAL\"]}]"
	gcp_call admin-token POST "v1/$key:setIamPolicy" "{\"policy\":{\"bindings\":$grants}}" >/dev/null ||
		fail "cannot grant the host the key $1"
	echo "$key"
}
kms_disable() { gcp_version_state "$1" DISABLED; }
kms_enable() { gcp_version_state "$1" ENABLED; }
kms_deny() { gcp_binding remove "$1" $ENCDEC; }
kms_allow() { gcp_binding add "$1" $ENCDEC; }
kms_token_key_ok() { [ "$(echo "$1" | json_get key_arn)" = "$(gcp_call admin-token GET "v1/$2" | jq -r .primary.name)" ]; }
kms_rotate() { # a new key version, made the primary (gcloud kms keys versions create --primary)
	local v
	v=$(gcp_call admin-token POST "v1/$1/cryptoKeyVersions" '{}' | jq -r .name) &&
		gcp_call admin-token POST "v1/$1:updatePrimaryVersion" "{\"cryptoKeyVersionId\":\"${v##*/}\"}" >/dev/null
}
kms_oracle_unwrap() { # DEVICE FILE: decrypt as the host, the token's context as AAD
	local tok
	tok=$(token_json "$1")
	gcp_call host-token POST "v1/$(echo "$tok" | json_get key_id):decrypt" \
		"{\"ciphertext\":\"$(echo "$tok" | json_get ciphertext)\",\"additionalAuthenticatedData\":\"$(echo "$tok" | jq -cjS .context | base64 -w0)\"}" |
		jq -r .plaintext | base64 -d >"$2"
	[ "$(stat -c %s "$2")" -eq 64 ] || fail "the oracle's DEK is not 64 bytes"
}
kms_fault() { # KIND COUNT
	local kind
	case $1 in
	throttle) kind=resource_exhausted ;;
	unavailable) kind=unavailable ;;
	*) fail "kms_fault: no such kind $1" ;;
	esac
	gcp_call admin-token POST _emulator/faults "{\"operation\":\"Decrypt\",\"fault\":\"$kind\",\"count\":$2}" >/dev/null ||
		fail "cannot inject $1"
}
kms_clear_faults() { gcp_call admin-token DELETE _emulator/faults >/dev/null || fail "cannot clear the faults"; }
