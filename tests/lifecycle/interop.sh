#!/usr/bin/env bash
# Interop both ways with the stock tools: a stock client of the provider's API unwraps the
# token's ciphertext with its context, and stock cryptsetup opens a dmbyok volume with that
# key; a volume made by plain cryptsetup is refused by dmbyok with a clear message; tables
# match cryptsetup's. interop.sh [PROVIDER]: aws (default), gcp or azure; the plain-LUKS2
# refusal is the aws run's.
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

# The oracle is a stock client of the provider's own API: curl (its --aws-sigv4 for AWS KMS,
# bearer tokens for the others). The AWS CLI itself proves the emulator's Decrypt on the host
# (kms-emulator-awscli); in the guest its start-up alone took 80 s of CPU under TCG.
step "a stock client unwraps the token's ciphertext through the $PROVIDER API (the oracle)"
check "$KMS_UNWRAP_OP as this host, with the token's context" kms_oracle_unwrap $DISK "$WORK/dek"
check "the unwrapped DEK is 64 bytes" test "$(stat -c %s "$WORK/dek")" -eq 64
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
