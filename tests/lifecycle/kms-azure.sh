# shellcheck shell=bash disable=SC2034 # the settings are for the scenarios (use_kms azure)
# The KMS adapter for Azure Key Vault (use_kms azure; the interface is in lib.sh). The
# emulator runs on the guest's loopback and is reached as Azure is: through HTTPS_PROXY (its
# CONNECT proxy, TLS verified against the test CA that signs *.vault.azure.net); dmbyok
# authenticates as the VM's managed identity (IMDS). Each key lives in a vault of its own,
# https://dmbyok-NAME.vault.azure.net/keys/NAME, so that removing the VM identity's access
# policy on one key's vault denies that key only. Key Vault has no encryption context: the
# key check value binds a volume.
AZ_EMULATOR=$DMBYOK_SOURCE_DIR/tests/kms-emulator-azure/azure-kv-emulator
AZ_LISTEN=127.0.0.1:48224 # fixed: the KMS is stopped and restarted under a running agent
AZ_URL=http://$AZ_LISTEN  # plain: the control API, IMDS and the CONNECT proxy
AZ_TENANT=5f0c3b6e-9a41-4d8e-b2a7-0d1e2f3a4b5c AZ_HOST_APP=0a1b2c3d-0000-4000-8000-0000000000a1
KMS_HOST_PRINCIPAL=7e000000-0000-4000-8000-00000000005a # the VM's system-assigned identity
KMS_UNWRAP_OP=UnwrapKey KMS_AUTH_OP=IMDS KMS_WRAP_OP=WrapKey
KMS_DENIED_RESULT=Forbidden/AccessDenied
KMS_DISABLE_WHAT=key KMS_DENY_WHAT="access policy"
KMS_UNREACHABLE=(HTTPS_PROXY=http://127.0.0.1:9)
# An app registration's client secret that Entra ID refuses (invalid_client).
KMS_BAD_CREDENTIALS=(AZURE_TENANT_ID=$AZ_TENANT AZURE_CLIENT_ID=$AZ_HOST_APP AZURE_CLIENT_SECRET=wrong)
KMS_AUDIT=$WORK/azure-audit.log

az_ctl() { # az_ctl WHAT JSON: the emulator's control API (the customer's side)
	curl -sS --fail-with-body --noproxy '*' -H 'Content-Type: application/json' -d "$2" \
		"$AZ_URL/_emulator/$1"
}
az_spawn() {
	"$AZ_EMULATOR" --listen "$AZ_LISTEN" --state "$WORK/azure.json" --audit-log "$KMS_AUDIT" \
		--tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" >"$WORK/azure.out" 2>"$WORK/azure.err" &
	KMS_PID=$!
	for _ in $(seq 1200); do
		grep -q 'listening on' "$WORK/azure.out" 2>/dev/null && return 0
		kill -0 "$KMS_PID" 2>/dev/null || { cat "$WORK/azure.err" >&2; fail "the Key Vault emulator died"; }
		sleep 0.1
	done
	fail "the Key Vault emulator never became ready"
}
kms_start() {
	"$DMBYOK_SOURCE_DIR/tests/kms-emulator-azure/make-test-certs" "$WORK" ||
		fail "cannot make the test certificates"
	az_spawn
	# dmbyok as on an Azure VM with a system-assigned managed identity: nothing but IMDS, and
	# the proxy/CA settings that route https://*.vault.azure.net to the emulator.
	export HTTPS_PROXY=$AZ_URL REQUESTS_CA_BUNDLE=$WORK/ca.pem AZURE_POD_IDENTITY_AUTHORITY_HOST=$AZ_URL
	unset AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_CLIENT_SECRET AZURE_CLIENT_CERTIFICATE_PATH \
		AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST
}
kms_stop() { kill "$KMS_PID" 2>/dev/null && wait "$KMS_PID" 2>/dev/null || true; }
kms_restart() { az_spawn; }

az_vault() { local h=${1#https://}; echo "${h%%/*}"; } # the key's vault host
kms_region() { az_vault "$1"; }                          # a token's region: the vault
kms_new_key() {
	local key=https://dmbyok-$1.vault.azure.net/keys/$1
	[ "$(az_ctl create-key "{\"key_id\":\"$key\"}" | jq -r '.key.kty + " " + (.attributes.enabled | tostring)')" = "RSA true" ] ||
		fail "cannot create the key $1"
	echo "$key"
}
az_enabled() { az_ctl enabled "{\"key_id\":\"$1\",\"enabled\":$2}" >/dev/null; }
az_policy() { # KEY PERMISSIONS|null: the VM identity's access policy on the key's vault
	az_ctl policy "{\"vault\":\"$(az_vault "$1")\",\"principal\":\"mi-system\",\"permissions\":$2}" >/dev/null
}
kms_disable() { az_enabled "$1" false; }
kms_enable() { az_enabled "$1" true; }
kms_deny() { az_policy "$1" null; }
kms_allow() { az_policy "$1" '["get","list","wrapKey","unwrapKey"]'; }
kms_token_key_ok() { # the key's current version (a key GET as its owner)
	[ "$(echo "$1" | json_get key_arn)" = "$(curl -sS --fail-with-body --cacert "$WORK/ca.pem" --proxy "$AZ_URL" \
		-H 'Authorization: Bearer admin-token' "$2?api-version=7.4" | jq -r .key.kid)" ]
}
kms_rotate() { az_ctl rotate "{\"key_id\":\"$1\"}" >/dev/null; } # a new current version
b64url() { tr '+/' '-_' | tr -d '='; }
unb64url() { tr -- '-_' '+/' | awk '{ n = length($0) % 4; if (n) $0 = $0 substr("===", 1, 4 - n); print }' | base64 -d; }
kms_oracle_unwrap() { # DEVICE FILE: UnwrapKey as the VM identity, on the token's key version
	local tok mi
	tok=$(token_json "$1")
	mi=$(curl -sS --noproxy '*' -H Metadata:true \
		"$AZ_URL/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net" |
		jq -r .access_token)
	curl -sS --fail-with-body --cacert "$WORK/ca.pem" --proxy "$AZ_URL" -H "Authorization: Bearer $mi" \
		-H 'Content-Type: application/json' \
		-d "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$(echo "$tok" | json_get ciphertext | b64url)\"}" \
		"$(echo "$tok" | json_get key_arn)/unwrapkey?api-version=7.4" | jq -r .value | unb64url >"$2"
	[ "$(stat -c %s "$2")" -eq 64 ] || fail "the oracle's DEK is not 64 bytes"
}
kms_fault() { # KIND COUNT
	case $1 in throttle | unavailable) ;; *) fail "kms_fault: no such kind $1" ;; esac
	az_ctl faults "{\"operation\":\"UnwrapKey\",\"fault\":\"${1/unavailable/http503}\",\"count\":$2}" >/dev/null ||
		fail "cannot inject $1"
}
kms_clear_faults() {
	curl -sS --fail-with-body --noproxy '*' -X DELETE "$AZ_URL/_emulator/faults" >/dev/null ||
		fail "cannot clear the faults"
}
