# shellcheck shell=bash disable=SC2034 # the settings are for cloud.sh, which sources this
# cloud.sh's adapter for Google Cloud KMS (sourced by cloud.sh gcp). The emulator serves KMS
# and the OAuth token endpoint over TLS; dmbyok authenticates with a service-account JSON
# key; the key is named by its resource name, its version is cryptoKeyVersions/1, the token's
# region is the location. The customer disables the key version and removes this host's IAM
# binding on the key.
EMU_BIN=$DMBYOK_SOURCE_DIR/tests/kms-emulator-gcp/gcp-kms-emulator
EMU_LISTEN=127.0.0.1:48223
EMU_URL=https://$EMU_LISTEN
HOST_SA=dmbyok-host@dmbyok-test.iam.gserviceaccount.com
HOST_PRINCIPAL=serviceAccount:$HOST_SA
KEY=projects/dmbyok-test/locations/europe-west1/keyRings/volumes/cryptoKeys/orders
REGION=europe-west1
AUTH_OP=Token WRAP_OP=Encrypt UNWRAP_OP=Decrypt WRAP_MATCH=
DENIED_RESULT=PERMISSION_DENIED
DISABLE_WHAT="key version" ACCESS_WHAT="IAM binding"
OPEN_WHAT="OAuth JWT grant, Decrypt over TLS, table load" COPY_NOTE=
ENCDEC=roles/cloudkms.cryptoKeyEncrypterDecrypter

# Cloud KMS's REST API as some bearer token (admin-token: the key's owner; host-token: this
# host, as a test oracle), and the emulator's control API. curl, not gcp-emulatorctl: a
# Python start costs seconds under TCG.
gcp_call() { # gcp_call TOKEN METHOD PATH [BODY]
	curl -sS --fail-with-body --cacert "$WORK/ca.pem" -X "$2" -H "Authorization: Bearer $1" \
		-H 'Content-Type: application/json' ${4:+-d "$4"} "$EMU_URL/$3"
}
version_state() { # version_state ENABLED|DISABLED: as gcloud kms keys versions enable/disable
	gcp_call admin-token PATCH "v1/$KEY/cryptoKeyVersions/1?updateMask=state" "{\"state\":\"$1\"}" >/dev/null
}
# key_binding add|remove ROLE: this host's binding on the key, as gcloud's
# add-/remove-iam-policy-binding do it (read, edit, write back with the etag).
key_binding() {
	local policy
	policy=$(gcp_call admin-token GET "v1/$KEY:getIamPolicy") || return 1
	policy=$(jq -c --arg op "$1" --arg r "$2" --arg m "$HOST_PRINCIPAL" '
		.bindings = ([(.bindings // [])[] | select(.role != $r)] +
			[{role: $r, members: (([(.bindings // [])[] | select(.role == $r) | .members[]] - [$m]) +
				(if $op == "add" then [$m] else [] end))} | select(.members != [])])' <<<"$policy") ||
		return 1
	gcp_call admin-token POST "v1/$KEY:setIamPolicy" "{\"policy\":$policy}" >/dev/null
}
key_disable() { version_state DISABLED; }
key_enable() { version_state ENABLED; }
access_remove() { key_binding remove $ENCDEC; }
access_restore() { key_binding add $ENCDEC; }
is_key_version() { [ "$1" = "$KEY/cryptoKeyVersions/1" ]; }

# The key ring, the key, this host's grants on the key only, its service-account key.
provider_setup() {
	# The project-level grants of a fresh emulator would outlive a key binding's removal.
	gcp_call admin-token POST _emulator/project-policy \
		'{"bindings":[{"role":"roles/owner","members":["user:admin@example.com"]}]}' >/dev/null ||
		fail "cannot set the project policy"
	local ring=${KEY%/cryptoKeys/*} grants
	check "create the key ring" quietly gcp_call admin-token POST "v1/${ring%/keyRings/*}/keyRings?keyRingId=volumes" '{}'
	check "create the key; version 1 is its enabled primary" test "$(gcp_call admin-token POST \
		"v1/$ring/cryptoKeys?cryptoKeyId=orders" '{"purpose":"ENCRYPT_DECRYPT"}' |
		jq -r '.primary.name + " " + .primary.state')" = "$KEY/cryptoKeyVersions/1 ENABLED"
	grants="[{\"role\":\"$ENCDEC\",\"members\":[\"$HOST_PRINCIPAL\"]},{\"role\":\"roles/cloudkms.viewer\",\"members\":[\"$HOST_PRINCIPAL\"]}]"
	check "grant this host encrypt/decrypt and viewer on the key" test "$(gcp_call admin-token POST \
		"v1/$KEY:setIamPolicy" "{\"policy\":{\"bindings\":$grants}}" | jq -c .bindings)" = "$grants"
	(umask 077 && gcp_call admin-token POST _emulator/service-account-keys "{\"email\":\"$HOST_SA\"}" \
		>"$WORK/sa.json") || fail "cannot make the service-account key"
	check "a service-account JSON key whose token_uri is the emulator" \
		quietly jq -e ".type == \"service_account\" and .client_email == \"$HOST_SA\" and (.token_uri | startswith(\"$EMU_URL\"))" "$WORK/sa.json"
	mkdir -p "$WORK/gcloud"
	export CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDKMS=$EMU_URL/
	export CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE=$WORK/ca.pem
	export GOOGLE_APPLICATION_CREDENTIALS=$WORK/sa.json CLOUDSDK_CONFIG=$WORK/gcloud
	unset GCE_METADATA_HOST GCE_METADATA_ROOT
}

# oracle_unwrap TOKEN FILE: the DEK, decrypted by the emulator for the host with the token's
# context as AAD.
oracle_unwrap() {
	local aad
	aad=$(echo "$1" | jq -cjS .context | base64 -w0)
	gcp_call host-token POST "v1/$KEY:decrypt" \
		"{\"ciphertext\":\"$(echo "$1" | json_get ciphertext)\",\"additionalAuthenticatedData\":\"$aad\"}" |
		jq -r .plaintext | base64 -d >"$2"
}

# Cloud KMS has no checks of its own here: its AAD binding is the copied-token step's.
provider_format_checks() { :; }
provider_disabled_checks() { :; }
provider_extra_checks() { :; }
