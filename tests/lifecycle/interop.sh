#!/usr/bin/env bash
# Interop both ways with the stock tools: the AWS CLI unwraps the token's ciphertext with
# its context, and stock cryptsetup opens a dmbyok volume with that key; a volume made by
# plain cryptsetup is refused by dmbyok with a clear message; tables match cryptsetup's.
# interop.sh [PROVIDER]: aws (default), gcp or azure. For gcp and azure the oracle is the
# provider's own REST API (kms_oracle_unwrap); the plain-LUKS2 refusal is the aws run's.
. "$(dirname "$0")/lib.sh"
use_kms "${1:-aws}"
DISK=/dev/vda OTHER=/dev/vdb
MNT=$WORK/mnt
mkdir -p "$MNT"

step "KMS emulator, key, a dmbyok volume with data"
kms_start
KEY=$(kms_new_key interop)
check "format" $DMBYOK format $DISK --key "$KEY"
check "open" $DMBYOK open $DISK data
mkfs.ext4 -q /dev/mapper/data && mount /dev/mapper/data "$MNT"
echo "written through dmbyok" >"$MNT/hello" && umount "$MNT"
DMBYOK_TABLE=$(dmsetup table data)
check "close" $DMBYOK close data

if for_provider aws; then
	step "the AWS CLI unwraps the token's ciphertext (the real client as oracle)"
	TOKEN=$(token_json $DISK)
	echo "$TOKEN" | json_get ciphertext | base64 -d >"$WORK/blob"
	aws_decrypt() {
		/usr/bin/aws kms decrypt --endpoint-url "$KMS_URL" --ciphertext-blob "fileb://$WORK/blob" \
			--encryption-context "$(echo "$TOKEN" | json_get context)" \
			--query Plaintext --output text --cli-connect-timeout 5 >"$WORK/dek.b64"
	}
	check "aws kms decrypt with the token's context" aws_decrypt
	base64 -d "$WORK/dek.b64" >"$WORK/dek"
	check "the unwrapped DEK is 64 bytes" test "$(stat -c %s "$WORK/dek")" -eq 64
else
	step "the $PROVIDER API unwraps the token's ciphertext (the provider's own API as oracle)"
	check "$KMS_UNWRAP_OP as this host, through the provider's REST API" kms_oracle_unwrap $DISK "$WORK/dek"
	check "the unwrapped DEK is 64 bytes" test "$(stat -c %s "$WORK/dek")" -eq 64
fi
check "luksDump shows the dmbyok token" bash -c "cryptsetup luksDump $DISK | grep -A2 '^Tokens:' | grep -q dmbyok"

step "stock cryptsetup opens the dmbyok volume with that key"
check "cryptsetup open --key-file" cryptsetup open --key-file "$WORK/dek" $DISK stock
mount -o ro /dev/mapper/stock "$MNT"
check "data written through dmbyok reads back through cryptsetup" \
	test "$(cat "$MNT/hello")" = "written through dmbyok"
umount "$MNT"
STOCK_TABLE=$(dmsetup table stock)
echo "dmbyok: $DMBYOK_TABLE"
echo "stock:  $STOCK_TABLE"
# Same cipher, offset, sector size and IV scheme; only the key reference differs.
norm() { awk '{ $5 = "KEY"; print }'; }
check "dmbyok's table equals cryptsetup's but for the key reference" \
	test "$(norm <<<"$DMBYOK_TABLE")" = "$(norm <<<"$STOCK_TABLE")"
check "cryptsetup close" cryptsetup close stock
rm -f "$WORK/dek" "$WORK/dek.b64"

if for_provider aws; then
	step "a plain cryptsetup LUKS2 volume is refused"
	printf 'passphrase' >"$WORK/pass"
	cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$WORK/pass" $OTHER
	BEFORE=$(header_sum $OTHER)
	expect_exit 7 "dmbyok open refuses a volume without a dmbyok token" $DMBYOK open $OTHER plain
	check "the message says why" grep -q 'without a dmbyok token' "$WORK/err"
	check "its header is unchanged" test "$(header_sum $OTHER)" = "$BEFORE"
	check "no mapping was made" bash -c "! dmsetup info plain >/dev/null 2>&1"
else
	not_for_provider "a plain cryptsetup LUKS2 volume is refused"
fi
kms_stop
finish
