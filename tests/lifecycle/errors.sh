#!/usr/bin/env bash
# Every documented failure gives its exit code and a message, and changes nothing: the
# header bytes and the set of mappings are the same after the failed command as before.
# errors.sh [PROVIDER]: aws (default), gcp or azure, through its KMS adapter (lib.sh). What
# does not depend on the KMS (parsing, busy devices, foreign volumes, the kernel) is checked
# in the aws run only.
. "$(dirname "$0")/lib.sh"
use_kms "${1:-aws}"
A=/dev/vda B=/dev/vdb C=/dev/vdc D=/dev/vdd

# refuses CODE "what" DEVICE command...: exit CODE, header and mappings untouched.
refuses() {
	local code=$1 what=$2 dev=$3 before maps; shift 3
	before=$(header_sum "$dev"); maps=$(dmsetup ls)
	expect_exit "$code" "$what" "$@"
	[ "$(header_sum "$dev")" = "$before" ] || fail "$what: the header changed"
	[ "$(dmsetup ls)" = "$maps" ] || fail "$what: the mappings changed"
}
ms_since() { echo $((($(usecs) - $1) / 1000)); }

step "two volumes under two keys, one with a detached header"
kms_start
KEY_A=$(kms_new_key a)
KEY_B=$(kms_new_key b)
echo "keys $KEY_A, $KEY_B"
check "format A" $DMBYOK format $A --key "$KEY_A"
check "format B" $DMBYOK format $B --key "$KEY_B"
check "format C with a detached header" $DMBYOK format $C --key "$KEY_A" --header "$WORK/c.hdr"
check "C's data device carries no header" bash -c "! cryptsetup isLuks $C"
t0=$(usecs)
check "open C through its detached header" $DMBYOK open $C cdata --header "$WORK/c.hdr"
echo "TIMING: dmbyok open ($PROVIDER) took $(ms_since "$t0") ms"
check "close C" $DMBYOK close cdata

if for_provider aws; then
	step "bad input"
	expect_exit 2 "no verb" $DMBYOK
	expect_exit 2 "unknown verb" $DMBYOK frobnicate
	expect_exit 2 "format without --key" $DMBYOK format $A
	expect_exit 2 "open with a missing argument" $DMBYOK open $A
	expect_exit 2 "lock of an unknown mapping" $DMBYOK lock nosuch
	expect_exit 2 "format a device that does not exist" $DMBYOK format /dev/nosuch --key "$KEY_A"
	expect_exit 2 "reserved context key" $DMBYOK format $A --key "$KEY_A" --force --context dmbyok:volume=x
	refuses 2 "encryption context too large" $A $DMBYOK format $A --key "$KEY_A" --force \
		--context "big=$(head -c 5000 /dev/zero | tr '\0' x)"
	refuses 2 "an alias that does not exist is a typo, not a revoked key" $A \
		$DMBYOK format $A --key alias/no-such-alias --force
	refuses 2 "--region contradicting the key ARN's region" $A $DMBYOK open $A data --region eu-west-3
	check "the message names both regions" grep -q 'eu-west-3.*us-east-1' "$WORK/err"
	mkdir -p "$WORK/small" && mount -t tmpfs -o size=64k tmpfs "$WORK/small"
	CSUM=$(header_sum $C)
	expect_exit 1 "a detached header that cannot be written (full file system)" \
		$DMBYOK format $C --key "$KEY_A" --force --header "$WORK/small/c.hdr"
	check "the half-written header file was removed" test ! -e "$WORK/small/c.hdr"
	check "the data device is untouched" test "$(header_sum $C)" = "$CSUM"
	umount "$WORK/small"
else
	not_for_provider "bad input"
fi

step "the customer removes this host's access ($KMS_DENY_WHAT), then disables the $KMS_DISABLE_WHAT"
kms_deny "$KEY_A" || fail "cannot remove the host's access to $KEY_A"
refuses 3 "the $KMS_DENY_WHAT denies the host's $KMS_UNWRAP_OP" $A $DMBYOK open $A data
check "the message says the key is unusable" grep -q 'unusable' "$WORK/err"
expect_exit 3 "doctor reports the denied call" $DMBYOK doctor --key "$KEY_A"
cat "$WORK/out"
# The first KMS call the removed access refuses: AWS's policy denies Decrypt only; Cloud
# KMS's missing encrypter/decrypter role refuses the Encrypt of GenerateDataKey already;
# Key Vault's missing access policy refuses even the key's get (DescribeKey).
case $PROVIDER in
aws) check "doctor names Decrypt as failing" grep -q '^FAIL Decrypt' "$WORK/out" ;;
gcp) check "doctor names GenerateDataKey (Encrypt) as failing, PERMISSION_DENIED" \
	bash -c "grep -q '^ok   DescribeKey' $WORK/out && grep -A1 '^FAIL GenerateDataKey' $WORK/out | grep -q PERMISSION_DENIED" ;;
azure) check "doctor names DescribeKey as failing, Forbidden" \
	bash -c "grep -A1 '^FAIL DescribeKey' $WORK/out | grep -q Forbidden" ;;
esac
kms_allow "$KEY_A" || fail "cannot restore the host's access to $KEY_A"
check "open works again once access is restored" $DMBYOK open $A data
check "close" $DMBYOK close data
kms_disable "$KEY_A" || fail "cannot disable $KEY_A"
refuses 3 "disabled $KMS_DISABLE_WHAT" $A $DMBYOK open $A data
kms_enable "$KEY_A" || fail "cannot enable $KEY_A"
check "open works again once the key is back" $DMBYOK open $A data
check "close" $DMBYOK close data

step "tokens that do not belong"
ORIG=$(token_json $A)
echo "$ORIG" | jq -c '.context.tenant = "evil"' >"$WORK/wrongctx.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/wrongctx.json" $A
if for_provider azure; then
	# Key Vault has no encryption context (docs/kms-azure.md): the context is stored, not
	# bound. What binds the token to its volume is the key check value (UUID and header).
	check "an altered context is not bound by Key Vault: open succeeds" $DMBYOK open $A data
	check "close" $DMBYOK close data
	echo "$ORIG" | jq -c '.key_check |= (.[:-4] + (if .[-4:] == "0000" then "1111" else "0000" end))' \
		>"$WORK/wrongkcv.json"
	cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/wrongkcv.json" $A
	refuses 6 "an altered key check value (what binds the volume)" $A $DMBYOK open $A data
	check "the message says the key check value does not match" grep -q 'key check value' "$WORK/err"
else
	refuses 6 "wrong encryption context" $A $DMBYOK open $A data
fi
token_json $B | jq -c '.keyslots = ["0"]' >"$WORK/swapped.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/swapped.json" $A
calls=$(kms_unwrap_calls)
refuses 6 "token copied from another volume" $A $DMBYOK open $A data
check "the swapped token was refused before any KMS call" test "$(kms_unwrap_calls)" = "$calls"
echo "{\"type\":\"dmbyok\",\"keyslots\":[\"0\"],\"version\":1,\"kms\":\"$PROVIDER\"}" >"$WORK/corrupt.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/corrupt.json" $A
refuses 7 "corrupt token JSON" $A $DMBYOK open $A data
echo "$ORIG" >"$WORK/orig.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/orig.json" $A
head -c 4096 "$WORK/c.hdr" >"$WORK/truncated.hdr"
refuses 7 "truncated header" $C $DMBYOK open $C cdata --header "$WORK/truncated.hdr"
check "the message says what to do" grep -q 'luksHeaderRestore' "$WORK/err"

step "outage and credentials are not revocation"
refuses 4 "KMS unreachable" $A env "${KMS_UNREACHABLE[@]}" $DMBYOK open $A data
if for_provider aws; then
	refuses 5 "expired credentials" $A env AWS_ACCESS_KEY_ID=AKIDEXPIRED000000001 \
		AWS_SECRET_ACCESS_KEY=expiredsecret AWS_SESSION_TOKEN=expired-token $DMBYOK open $A data
	refuses 5 "wrong secret key" $A env "${KMS_BAD_CREDENTIALS[@]}" $DMBYOK open $A data
else
	refuses 5 "credentials the provider refuses (${KMS_BAD_CREDENTIALS[*]%%=*})" $A \
		env "${KMS_BAD_CREDENTIALS[@]}" $DMBYOK open $A data
fi
calls=$(kms_unwrap_calls)
kms_fault throttle 2
t0=$(usecs)
check "throttled twice, open still succeeds (retries)" $DMBYOK open $A data
echo "TIMING: dmbyok open with two throttled $KMS_UNWRAP_OP calls took $(ms_since "$t0") ms"
check "three $KMS_UNWRAP_OP calls reached the KMS" test "$(($(kms_unwrap_calls) - calls))" -eq 3
kms_clear_faults

if for_provider aws; then
	step "busy"
	refuses 8 "a mapping of that name exists" $B $DMBYOK open $B data
	refuses 8 "the same device under a second name" $A $DMBYOK open $A data2
	check "the message says the device is in use" grep -q 'in use' "$WORK/err"
	refuses 8 "format of a device in use" $A $DMBYOK format $A --key "$KEY_A" --force
	check "close" $DMBYOK close data

	step "volumes and mappings that are not dmbyok's"
	printf 'x' >"$WORK/pass"
	cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --key-file "$WORK/pass" $D
	refuses 7 "a LUKS1 volume" $D $DMBYOK open $D old
	check "the message says LUKS1, not corrupt" grep -q 'LUKS1 volume' "$WORK/err"
	dmsetup create lin --table "0 2048 linear $D 0"
	expect_exit 2 "close refuses a non-crypt mapping" $DMBYOK close lin
	check "it says there is no such dmbyok mapping" grep -q 'No dmbyok mapping named lin' "$WORK/err"
	check "and leaves it alone" dmsetup info lin
	dmsetup remove lin

	step "no dm-crypt in the kernel"
	rmmod dm_crypt
	refuses 9 "open without the crypt target" $A $DMBYOK open $A data
else
	check "close" $DMBYOK close data
	not_for_provider "busy"
	not_for_provider "volumes and mappings that are not dmbyok's"
	not_for_provider "no dm-crypt in the kernel"
fi
kms_stop
finish
