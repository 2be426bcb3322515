#!/usr/bin/env bash
# Rotation: the alias moves to a new key, `rewrap` re-wraps the DEK (KMS ReEncrypt) without
# touching the data; the old key can then be disabled. A failed re-wrap changes nothing.
. "$(dirname "$0")/lib.sh"
DISK=/dev/vda
MNT=$WORK/mnt
mkdir -p "$MNT"

step "a volume under alias/app -> key 1, with data"
start_kms
K1=$(create_key alias/app)
check "format under the alias" $DMBYOK format $DISK --key alias/app
check "open" $DMBYOK open $DISK data
mkfs.ext4 -q /dev/mapper/data && mount /dev/mapper/data "$MNT"
head -c 4M /dev/urandom >"$MNT/blob"; SUM=$(sha256sum <"$MNT/blob"); umount "$MNT"
check "close" $DMBYOK close data
check "the token names key 1" test "$(token_json $DISK | json_get key_arn)" = "$K1"

step "the customer moves the alias to key 2 (manual rotation)"
K2=$(kms_as customer CreateKey '{}' | json_get KeyMetadata.Arn)
kms_as customer UpdateAlias "{\"AliasName\":\"alias/app\",\"TargetKeyId\":\"$K2\"}" >/dev/null
OLD_CT=$(token_json $DISK | json_get ciphertext)
check "rewrap follows the alias" $DMBYOK rewrap $DISK
check "the token now names key 2" test "$(token_json $DISK | json_get key_arn)" = "$K2"
check "the token keeps the alias as its key id" test "$(token_json $DISK | json_get key_id)" = alias/app
check "the ciphertext changed" test "$(token_json $DISK | json_get ciphertext)" != "$OLD_CT"
check "the re-wrap time is recorded" bash -c "token_json() { cryptsetup token export --token-id 0 \$1; }; token_json $DISK | jq -e .rewrapped >/dev/null"

step "key 1 is retired; the volume opens under key 2 with its data intact"
kms_as customer DisableKey "{\"KeyId\":\"$K1\"}" >/dev/null
check "open after key 1 is disabled" $DMBYOK open $DISK data
mount -o ro /dev/mapper/data "$MNT"
check "data intact" test "$(sha256sum <"$MNT/blob")" = "$SUM"
umount "$MNT"
check "close" $DMBYOK close data

step "automatic-style rotation (new material, same key) and an explicit new key"
curl_rotate() { kms_as customer RotateKeyOnDemand "{\"KeyId\":\"$K2\"}" >/dev/null; }
check "rotate key 2's material" curl_rotate
check "rewrap under the rotated key" $DMBYOK rewrap $DISK
K3=$(kms_as customer CreateKey '{}' | json_get KeyMetadata.Arn)
check "open (the agent would watch this mapping's key)" $DMBYOK open $DISK data
check "rewrap --key to key 3 while open" $DMBYOK rewrap $DISK --key "$K3"
check "status of the open mapping names key 3, not the key it was opened under" \
	test "$($DMBYOK status data --json | jq -r .key_arn)" = "$K3"
check "its runtime record was updated too (not stale)" \
	test "$($DMBYOK status data --json | jq -r .record)/$(jq -r .key_arn "$DMBYOK_RUNTIME_DIR/mappings/data.json")" = "ok/$K3"
check "close" $DMBYOK close data
check "the token now names key 3 as key id and ARN" \
	test "$(token_json $DISK | json_get key_id)/$(token_json $DISK | json_get key_arn)" = "$K3/$K3"

step "a re-wrap that cannot complete changes nothing"
K4=$(kms_as customer CreateKey '{}' | json_get KeyMetadata.Arn)
kms_as customer DisableKey "{\"KeyId\":\"$K4\"}" >/dev/null
BEFORE=$(header_sum $DISK)
expect_exit 3 "rewrap to a disabled key" $DMBYOK rewrap $DISK --key "$K4"
check "the header is unchanged" test "$(header_sum $DISK)" = "$BEFORE"
check "and still opens" $DMBYOK open $DISK data
check "close" $DMBYOK close data
stop_kms
finish
