# shellcheck shell=bash disable=SC2034 # the settings are for the scenarios (use_kms aws)
# The KMS adapter for AWS KMS (use_kms aws; the interface is in lib.sh), over lib.sh's AWS
# emulator helpers. A key is created with the alias alias/NAME, which is what the volumes
# name; the host may use it through the key policy's IAM delegation. The customer disables
# the key, or adds a Deny of the host's Decrypt to the key policy.
: "${KMS_LISTEN:=127.0.0.1:48123}" # fixed: the KMS is stopped and restarted under the agent
KMS_HOST_PRINCIPAL=arn:aws:iam::111122223333:role/dmbyok-host
kms_region() { echo us-east-1; }
KMS_UNWRAP_OP=Decrypt KMS_WRAP_OP=GenerateDataKey KMS_AUTH_OP=
KMS_DENIED_RESULT=AccessDeniedException
KMS_DISABLE_WHAT=key KMS_DENY_WHAT="key policy"
KMS_UNREACHABLE=(AWS_ENDPOINT_URL_KMS=http://127.0.0.1:9)
KMS_BAD_CREDENTIALS=(AWS_SECRET_ACCESS_KEY=wrong)
KMS_AUDIT=$WORK/audit.log
AWS_ALLOW_POLICY='{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM policies","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}'
AWS_DENY_POLICY='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/dmbyok-host"},"Action":"kms:Decrypt","Resource":"*"}]}'

kms_start() { AWS_TLS=${1:-}; start_kms $AWS_TLS; }
kms_stop() { stop_kms; }
kms_restart() { start_kms $AWS_TLS; }
aws_key_arn() { kms_as customer DescribeKey "{\"KeyId\":\"$1\"}" | json_get KeyMetadata.Arn; }
kms_new_key() { create_key "alias/$1" >/dev/null && echo "alias/$1"; }
aws_key_op() { kms_as customer "$1" "{\"KeyId\":\"$(aws_key_arn "$2")\"}" >/dev/null; }
aws_key_policy() {
	kms_as customer PutKeyPolicy "{\"KeyId\":\"$(aws_key_arn "$1")\",\"PolicyName\":\"default\",\"Policy\":$(jq -Rs . <<<"$2")}" >/dev/null
}
kms_disable() { aws_key_op DisableKey "$1"; }
kms_enable() { aws_key_op EnableKey "$1"; }
kms_deny() { aws_key_policy "$1" "$AWS_DENY_POLICY"; }
kms_allow() { aws_key_policy "$1" "$AWS_ALLOW_POLICY"; }
kms_token_key_ok() { [ "$(echo "$1" | json_get key_arn)" = "$(aws_key_arn "$2")" ]; }
kms_oracle_unwrap() { unwrap_dek_to "$1" "$2"; }
kms_fault() { # KIND COUNT
	case $1 in
	throttle) aws_fault "{\"operation\":\"Decrypt\",\"fault\":\"throttle\",\"count\":$2}" ;;
	unavailable) aws_fault "{\"operation\":\"Decrypt\",\"fault\":\"http503\",\"count\":$2}" ;;
	*) fail "kms_fault: no such kind $1" ;;
	esac
}
kms_clear_faults() { aws_clear_faults; }
