# shellcheck shell=bash disable=SC2034 # the settings are for cloud.sh, which sources this
# cloud.sh's adapter for Azure Key Vault (sourced by cloud.sh azure). The emulator runs on
# the guest's loopback and is reached as Azure is: through HTTPS_PROXY (its CONNECT proxy,
# TLS verified against the test CA that signs *.vault.azure.net); dmbyok authenticates as the
# VM's managed identity (IMDS, AZURE_POD_IDENTITY_AUTHORITY_HOST). The key is named by its
# identifier, the token records the exact key version and the vault as region. The customer
# disables the key and removes the VM identity's access policy. Key Vault has no AAD: the
# key check value binds the volume. Its own checks: the dump's text, doctor, rotation.
EMU_BIN=$DMBYOK_SOURCE_DIR/tests/kms-emulator-azure/azure-kv-emulator
EMU_LISTEN=127.0.0.1:48224
EMU_URL=http://$EMU_LISTEN # plain: the control API, IMDS and the CONNECT proxy
VAULT_HOST=dmbyok-test.vault.azure.net
KEY=https://$VAULT_HOST/keys/orders
REGION=$VAULT_HOST
HOST_PRINCIPAL=7e000000-0000-4000-8000-00000000005a # the VM's system-assigned identity
AUTH_OP=IMDS WRAP_OP=WrapKey UNWRAP_OP=UnwrapKey WRAP_MATCH='and .via_proxy and .tls'
DENIED_RESULT=Forbidden/AccessDenied
DISABLE_WHAT=key ACCESS_WHAT="access policy"
OPEN_WHAT="IMDS token, UnwrapKey over TLS through the proxy, table load"
COPY_NOTE=" (Key Vault binds nothing: the key check value does)"

# The emulator's control API (the customer's side: key administration, access policies),
# with curl: a Python start costs seconds under TCG.
az_ctl() { # az_ctl WHAT JSON
	curl -sS --fail-with-body --noproxy '*' -H 'Content-Type: application/json' -d "$2" \
		"$EMU_URL/_emulator/$1"
}
key_enabled() { az_ctl enabled "{\"key_id\":\"$KEY\",\"enabled\":$1}" >/dev/null; }
host_policy() { # host_policy grant|remove: the VM identity's access policy on the vault
	local perms=null
	[ "$1" = grant ] && perms='["get","list","wrapKey","unwrapKey"]'
	az_ctl policy "{\"vault\":\"$VAULT_HOST\",\"principal\":\"mi-system\",\"permissions\":$perms}" >/dev/null
}
key_disable() { key_enabled false; }
key_enable() { key_enabled true; }
access_remove() { host_policy remove; }
access_restore() { host_policy grant; }
is_key_version() { [[ $1 =~ ^$KEY/[0-9a-f]{32}$ ]]; }
b64url() { tr '+/' '-_' | tr -d '='; }
unb64url() { tr -- '-_' '+/' | awk '{ n = length($0) % 4; if (n) $0 = $0 substr("===", 1, 4 - n); print }' | base64 -d; }

provider_setup() {
	check "create the RSA 2048 key orders" test "$(az_ctl create-key "{\"key_id\":\"$KEY\"}" |
		jq -r '.key.kty + " " + (.attributes.enabled | tostring)')" = "RSA true"
	# dmbyok as on an Azure VM with a system-assigned managed identity: nothing but IMDS, and
	# the proxy/CA settings that route https://*.vault.azure.net to the emulator.
	export HTTPS_PROXY=$EMU_URL REQUESTS_CA_BUNDLE=$WORK/ca.pem AZURE_POD_IDENTITY_AUTHORITY_HOST=$EMU_URL
	unset AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_CLIENT_SECRET AZURE_CLIENT_CERTIFICATE_PATH \
		AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST
}

# oracle_unwrap TOKEN FILE: the DEK, unwrapped by the emulator for this VM's identity on the
# token's key version.
oracle_unwrap() {
	local mi_token
	mi_token=$(curl -sS --noproxy '*' -H Metadata:true \
		"$EMU_URL/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net" |
		jq -r .access_token)
	curl -sS --fail-with-body --cacert "$WORK/ca.pem" --proxy "$EMU_URL" -H "Authorization: Bearer $mi_token" \
		-H 'Content-Type: application/json' \
		-d "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$(echo "$1" | json_get ciphertext | base64 -d | base64 -w0 | b64url)\"}" \
		"$(echo "$1" | json_get key_arn)/unwrapkey?api-version=7.4" | jq -r .value | unb64url >"$2"
}

provider_format_checks() {
	$DMBYOK dump $A | grep -E 'kms:' | tee "$WORK/dump.txt"
	check "dump: 'kms: azure, region $VAULT_HOST'" grep -q "azure, region $VAULT_HOST" "$WORK/dump.txt"
}
provider_disabled_checks() {
	check "the emulator answered Forbidden/KeyDisabled" audit_has \
		'any(.operation == "UnwrapKey" and .result == "Forbidden/KeyDisabled")'
}
# doctor's Key Vault checks, and a rotation: rewrap moves the volume to the new version.
provider_extra_checks() {
	step "doctor --key: the Key Vault checks"
	$DMBYOK doctor --key "$KEY" | tee "$WORK/doctor.txt" | grep -E 'DescribeKey|GenerateDataKey|Decrypt|ReEncrypt'
	check "doctor: DescribeKey names the current version, Enabled" grep -q "^ok   DescribeKey .*$KEY/[0-9a-f]\{32\} is Enabled" "$WORK/doctor.txt"

	step "rotation: a new key version, rewrap moves the volume to it (ReEncrypt, DEK in locked memory)"
	az_ctl rotate "{\"key_id\":\"$KEY\"}" >/dev/null || fail "cannot rotate the key"
	check "rewrap while open" $DMBYOK rewrap $A
	local old=$VERSION
	VERSION=$(token_json $A | json_get key_arn)
	check "the token records the new version ($VERSION)" bash -c "[ '$VERSION' != '$old' ] && [[ '$VERSION' =~ ^$KEY/[0-9a-f]{32}\$ ]]"
	check "the rewrap unwrapped under the old version and wrapped under the new one" audit_has \
		"any(.operation == \"WrapKey\" and (.path | contains(\"${VERSION##*/}\")))"
	check "close and reopen under the new version" bash -c "$DMBYOK close orders --quiet && $DMBYOK open $A orders --quiet"
	check "the data is intact" data_intact
}
