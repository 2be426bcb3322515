#!/usr/bin/env bash
# Every documented failure gives its exit code and a message, and changes nothing: the
# header bytes and the set of mappings are the same after the failed command as before.
. "$(dirname "$0")/lib.sh"
A=/dev/vda B=/dev/vdb C=/dev/vdc D=/dev/vdd

# refuses CODE "what" DEVICE command...: exit CODE, header and mappings untouched.
refuses() {
	local code=$1 what=$2 dev=$3 before maps; shift 3
	before=$(header_sum "$dev"); maps=$(dmsetup ls)
	expect_exit "$code" "$what" "$@"
	[ "$(header_sum "$dev")" = "$before" ] || fail "$what: the header changed"
	[ "$(dmsetup ls)" = "$maps" ] || fail "$what: the mappings changed"
}
decrypt_calls() { grep -c '"operation": *"Decrypt"' "$WORK/audit.log" || true; }
default_policy='{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM policies","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}'
deny_host_policy='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/dmbyok-host"},"Action":"kms:Decrypt","Resource":"*"}]}'

step "two volumes under two keys, one with a detached header"
start_kms
KEY_A=$(create_key alias/a)
create_key alias/b >/dev/null
check "format A" $DMBYOK format $A --key alias/a
check "format B" $DMBYOK format $B --key alias/b
check "format C with a detached header" $DMBYOK format $C --key alias/a --header "$WORK/c.hdr"
check "C's data device carries no header" bash -c "! cryptsetup isLuks $C"
check "open C through its detached header" $DMBYOK open $C cdata --header "$WORK/c.hdr"
check "close C" $DMBYOK close cdata

step "bad input"
expect_exit 2 "no verb" $DMBYOK
expect_exit 2 "unknown verb" $DMBYOK frobnicate
expect_exit 2 "format without --key" $DMBYOK format $A
expect_exit 2 "open with a missing argument" $DMBYOK open $A
expect_exit 2 "lock of an unknown mapping" $DMBYOK lock nosuch
expect_exit 2 "format a device that does not exist" $DMBYOK format /dev/nosuch --key alias/a
expect_exit 2 "reserved context key" $DMBYOK format $A --key alias/a --force --context dmbyok:volume=x
refuses 2 "encryption context too large" $A $DMBYOK format $A --key alias/a --force \
	--context "big=$(head -c 5000 /dev/zero | tr '\0' x)"
refuses 2 "an alias that does not exist is a typo, not a revoked key" $A \
	$DMBYOK format $A --key alias/no-such-alias --force
refuses 2 "--region contradicting the key ARN's region" $A $DMBYOK open $A data --region eu-west-3
check "the message names both regions" grep -q 'eu-west-3.*us-east-1' "$WORK/err"
mkdir -p "$WORK/small" && mount -t tmpfs -o size=64k tmpfs "$WORK/small"
CSUM=$(header_sum $C)
expect_exit 1 "a detached header that cannot be written (full file system)" \
	$DMBYOK format $C --key alias/a --force --header "$WORK/small/c.hdr"
check "the half-written header file was removed" test ! -e "$WORK/small/c.hdr"
check "the data device is untouched" test "$(header_sum $C)" = "$CSUM"
umount "$WORK/small"

step "the customer revokes the key"
kms_as customer PutKeyPolicy "{\"KeyId\":\"$KEY_A\",\"PolicyName\":\"default\",\"Policy\":$(jq -Rs . <<<"$deny_host_policy")}" >/dev/null
refuses 3 "policy denies the host Decrypt" $A $DMBYOK open $A data
check "the message says the key is unusable" grep -q 'unusable' "$WORK/err"
expect_exit 3 "doctor reports the denied Decrypt" $DMBYOK doctor --key alias/a
check "doctor names Decrypt as failing" grep -q '^FAIL Decrypt' "$WORK/out"
kms_as customer PutKeyPolicy "{\"KeyId\":\"$KEY_A\",\"PolicyName\":\"default\",\"Policy\":$(jq -Rs . <<<"$default_policy")}" >/dev/null
kms_as customer DisableKey "{\"KeyId\":\"$KEY_A\"}" >/dev/null
refuses 3 "disabled key" $A $DMBYOK open $A data
kms_as customer EnableKey "{\"KeyId\":\"$KEY_A\"}" >/dev/null
check "open works again once the key is back" $DMBYOK open $A data
check "close" $DMBYOK close data

step "tokens that do not belong"
ORIG=$(token_json $A)
echo "$ORIG" | jq -c '.context.tenant = "evil"' >"$WORK/wrongctx.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/wrongctx.json" $A
refuses 6 "wrong encryption context" $A $DMBYOK open $A data
token_json $B | jq -c '.keyslots = ["0"]' >"$WORK/swapped.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/swapped.json" $A
calls=$(decrypt_calls)
refuses 6 "token copied from another volume" $A $DMBYOK open $A data
check "the swapped token was refused before any KMS call" test "$(decrypt_calls)" = "$calls"
echo '{"type":"dmbyok","keyslots":["0"],"version":1,"kms":"aws"}' >"$WORK/corrupt.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/corrupt.json" $A
refuses 7 "corrupt token JSON" $A $DMBYOK open $A data
echo "$ORIG" >"$WORK/orig.json"
cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/orig.json" $A
head -c 4096 "$WORK/c.hdr" >"$WORK/truncated.hdr"
refuses 7 "truncated header" $C $DMBYOK open $C cdata --header "$WORK/truncated.hdr"
check "the message says what to do" grep -q 'luksHeaderRestore' "$WORK/err"

step "outage and credentials are not revocation"
refuses 4 "KMS unreachable" $A env AWS_ENDPOINT_URL_KMS=http://127.0.0.1:9 $DMBYOK open $A data
refuses 5 "expired credentials" $A env AWS_ACCESS_KEY_ID=AKIDEXPIRED000000001 \
	AWS_SECRET_ACCESS_KEY=expiredsecret AWS_SESSION_TOKEN=expired-token $DMBYOK open $A data
refuses 5 "wrong secret key" $A env AWS_SECRET_ACCESS_KEY=wrong $DMBYOK open $A data
calls=$(decrypt_calls)
aws_fault '{"operation":"Decrypt","fault":"throttle","count":2}'
check "throttled twice, open still succeeds (retries)" $DMBYOK open $A data
check "three Decrypt calls reached the KMS" test "$(($(decrypt_calls) - calls))" -eq 3
aws_clear_faults

step "busy"
refuses 8 "a mapping of that name exists" $B $DMBYOK open $B data
refuses 8 "the same device under a second name" $A $DMBYOK open $A data2
check "the message says the device is in use" grep -q 'in use' "$WORK/err"
refuses 8 "format of a device in use" $A $DMBYOK format $A --key alias/a --force
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
stop_kms
finish
