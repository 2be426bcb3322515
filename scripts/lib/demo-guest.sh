#!/usr/bin/env bash
# Runs inside the demo VM (see scripts/demo): narrates each step with its wall time.
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
DISK=/dev/vda
MNT=$WORK/mnt
mkdir -p "$MNT"
say() { printf '\n[%7ss] %s\n' "$(elapsed)" "$*"; }
timed() { # timed "label" command...: runs it and records how long it took
	local t0=$(date +%s.%N) label=$1; shift
	"$@"
	TIMELINE+=("$(printf '%-44s %6.2f s' "$label" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')")")
}
TIMELINE=()

say "Starting the AWS KMS emulator on the guest's loopback (the customer's KMS)."
start_kms
echo "    endpoint $KMS_URL; dmbyok acts as role/dmbyok-host"

say "The customer creates a key and an alias with the real AWS CLI."
customer_aws() {
	AWS_ACCESS_KEY_ID=AKIDCUSTOMER00000001 AWS_SECRET_ACCESS_KEY=customersecret \
		/usr/bin/aws --endpoint-url "$KMS_URL" kms "$@"
}
KEY_ARN=$(customer_aws create-key --description "orders database" --query KeyMetadata.Arn --output text)
customer_aws create-alias --alias-name alias/orders --target-key-id "$KEY_ARN"
echo "    $KEY_ARN  <-  alias/orders"

say "dmbyok format: a 512-bit DEK from KMS GenerateDataKey, bound to the volume's UUID."
timed "format (GenerateDataKey + LUKS2 header)" $DMBYOK format $DISK --key alias/orders --context service=orders
$DMBYOK dump $DISK | sed 's/^/    /'

say "dmbyok open: KMS Decrypt, key check, dm-crypt table programmed through the keyring."
timed "open (Decrypt + dm-crypt table)" $DMBYOK open $DISK orders
echo "    dmsetup table orders:"
dmsetup table orders | sed 's/^/      /'
grep -o 'xts(aes).*' /proc/crypto >/dev/null || true
echo "    kernel xts(aes) driver: $(awk '/^name/{n=$3} /^driver/{if (n=="xts(aes)") print $3}' /proc/crypto | head -1)"

say "ext4 on it, and some data."
mkfs.ext4 -q /dev/mapper/orders && mount /dev/mapper/orders "$MNT"
head -c 32M /dev/urandom >"$MNT/orders.db"; SUM=$(sha256sum <"$MNT/orders.db" | cut -c1-16)
sync; echo "    wrote 32 MiB, sha256 $SUM..."

say "A writer appends fsync'ed records while we lock the volume."
( i=0; while :; do printf 'order %08d\n' $i | dd of="$MNT/journal" oflag=append conv=notrunc,fsync status=none; echo $i >"$WORK/acked"; i=$((i+1)); done ) &
WRITER=$!
sleep 2
timed "lock (freeze, flush, suspend, key wipe)" $DMBYOK lock orders
A1=$(cat "$WORK/acked"); sleep 3; A2=$(cat "$WORK/acked")
echo "    state: $($DMBYOK status orders --json | jq -r .state); dm: $(dmsetup info orders | awk '/^State/{print $2}')"
echo "    acknowledged writes: $A1 -> $A2 over 3 s (I/O frozen)"
echo "    dmsetup table orders now:"
dmsetup table orders | sed 's/^/      /'
echo "    (no keyring reference: dm-crypt has no key in memory)"

say "dmbyok unlock: unwrap again from KMS, key set, resume."
timed "unlock (Decrypt + key set + resume)" $DMBYOK unlock orders
sleep 2; A3=$(cat "$WORK/acked")
echo "    acknowledged writes resumed: $A2 -> $A3"
kill $WRITER; wait $WRITER 2>/dev/null || true
ACKED=$(cat "$WORK/acked")

say "Close, reopen, verify everything."
umount "$MNT"
timed "close" $DMBYOK close orders
timed "open again" $DMBYOK open $DISK orders
mount -o ro /dev/mapper/orders "$MNT"
[ "$(sha256sum <"$MNT/orders.db" | cut -c1-16)" = "$SUM" ] || fail "data changed"
LINES=$(wc -l <"$MNT/journal")
[ "$LINES" -ge $((ACKED + 1)) ] || fail "lost acknowledged writes: $LINES < $((ACKED + 1))"
echo "    orders.db intact; journal has $LINES records, all $((ACKED + 1)) acknowledged ones present"
umount "$MNT"
$DMBYOK close orders

say "Timeline"
printf '    %s\n' "${TIMELINE[@]}"
stop_kms
echo
echo "demo: PASS"
