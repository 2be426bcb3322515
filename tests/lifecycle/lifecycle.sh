#!/usr/bin/env bash
# format -> open -> ext4 -> write -> close -> open -> intact; lock/unlock with a writer
# running and no acknowledged write lost; the table and the raw disk hold no secrets.
# lifecycle.sh [PROVIDER]: aws (default), gcp or azure, through its KMS adapter (lib.sh).
. "$(dirname "$0")/lib.sh"
use_kms "${1:-aws}"
DISK=/dev/vda
MNT=$WORK/mnt
mkdir -p "$MNT"

step "KMS emulator and a customer key"
kms_start
KEY=$(kms_new_key orders)
echo "key $KEY"

step "doctor"
check "doctor passes: kernel support and every KMS call allowed" \
	bash -c "$DMBYOK doctor --key $KEY | tee $WORK/doctor"
for op in "device-mapper with crypt target" "kernel keyring" DescribeKey GenerateDataKey Decrypt ReEncrypt; do
	check "doctor checked: $op" grep -q "^ok   $op" "$WORK/doctor"
done

step "format"
check "format succeeds" $DMBYOK format $DISK --key "$KEY" --context tenant=acme
check "luksDump shows a LUKS2 header with the dmbyok token" \
	bash -c "cryptsetup luksDump $DISK | tee $WORK/dump | grep -q 'dmbyok'"
check "exactly one keyslot" test "$(cryptsetup luksDump --dump-json-metadata $DISK | jq '.keyslots | length')" -eq 1
TOKEN=$(token_json $DISK)
check "token names the provider, the key as named, its region" test "$(echo "$TOKEN" | jq -r '[.kms, .key_id, .region] | join(" ")')" = "$PROVIDER $KEY $(kms_region "$KEY")"
check "token names the exact key version that wrapped ($(echo "$TOKEN" | json_get key_arn))" kms_token_key_ok "$TOKEN" "$KEY"
check "token context binds the volume UUID" \
	test "$(echo "$TOKEN" | json_get '"context"."dmbyok:volume"')" = "$(cryptsetup luksUUID $DISK)"
check "token keeps operator context" test "$(echo "$TOKEN" | json_get context.tenant)" = acme
check "dump --json shows 4096-byte sectors" test "$($DMBYOK dump $DISK --json | jq .sector_size)" -eq 4096
expect_exit 2 "format refuses a device carrying a LUKS signature" $DMBYOK format $DISK --key "$KEY"

step "open and inspect the table"
check "open succeeds" $DMBYOK open $DISK data
TABLE=$(dmsetup table data)
echo "$TABLE"
check "table cipher is aes-xts-plain64" grep -q ' crypt aes-xts-plain64 ' <<<"$TABLE"
check "table names a logon key in the keyring, not key bytes" grep -q ':64:logon:dmbyok:' <<<"$TABLE"
check "table uses 4096-byte sectors" grep -q 'sector_size:4096' <<<"$TABLE"
check "table keeps dm-crypt's default workqueues" bash -c "! grep -q workqueue <<<'$TABLE'"
kms_oracle_unwrap $DISK $WORK/dek
DEK_HEX=$(od -An -tx1 $WORK/dek | tr -d " \n")
check "dmsetup table --showkeys has no key hex" bash -c "! dmsetup table --showkeys data | grep -qi $DEK_HEX"
check "no dmbyok key is left in any keyring" bash -c "! grep -q 'dmbyok:' /proc/keys"
check "dm UUID has cryptsetup's LUKS2 form" bash -c "dmsetup info -c --noheadings -o uuid data | grep -q '^CRYPT-LUKS2-'"
check "cryptsetup status understands the mapping" bash -c "cryptsetup status data | grep -q 'type:    LUKS2'"
check "close" $DMBYOK close data
check "open --perf bypasses the kcryptd workqueues" $DMBYOK open $DISK data --perf no_read_workqueue,no_write_workqueue
check "the table carries both flags" bash -c "dmsetup table data | grep -q 'no_read_workqueue no_write_workqueue'"
check "status --json reports them" test "$($DMBYOK status data --json | jq -c '[.no_read_workqueue, .no_write_workqueue]')" = "[true,true]"
check "status --json says active" test "$($DMBYOK status data --json | jq -r .state)" = active
check "list shows the mapping" bash -c "$DMBYOK list --json | jq -e '.[] | select(.name == \"data\")' >/dev/null"

step "ext4, data, close, reopen"
mkfs.ext4 -q /dev/mapper/data
mount /dev/mapper/data "$MNT"
MARKER="dmbyok-plaintext-marker-$RANDOM$RANDOM"
for i in $(seq 2000); do echo "$MARKER line $i"; done >"$MNT/marker.txt"
head -c 16M /dev/urandom >"$MNT/blob"
SUM=$(sha256sum <"$MNT/blob")
sync
umount "$MNT"
check "close succeeds" $DMBYOK close data
check "raw disk never holds the plaintext" bash -c "! grep -qa '$MARKER' $DISK"
check "reopen succeeds" $DMBYOK open $DISK data
mount /dev/mapper/data "$MNT"
check "data intact after close/open" test "$(sha256sum <"$MNT/blob")" = "$SUM"

step "lock and unlock under a running writer"
start_writer "$MNT/log"
# The lock must meet a writer that is writing: one record acknowledged, at least.
check "the writer runs" wait_quietly 60 eval '[ -n "$(acked)" ]'
t_lock=$(date +%s.%N)
check "lock succeeds" $DMBYOK lock data
echo "lock took $(awk -v a=$t_lock -v b=$(date +%s.%N) 'BEGIN{printf "%.3f", b-a}') s"
check "status says locked" test "$($DMBYOK status data --json | jq -r .state)" = locked
check "dm reports the mapping suspended" bash -c "dmsetup info data | grep -q SUSPENDED"
check "the table no longer names a key" bash -c "! dmsetup table data | grep -q ':logon:'"
check "and holds no key bytes either" bash -c "! dmsetup table --showkeys data | grep -qi $DEK_HEX"
A1=$(acked); sleep 2; A2=$(acked)
check "I/O is frozen while locked (acked $A1 -> $A2)" test "$A1" = "$A2"
t0=$(usecs)
check "unlock succeeds" $DMBYOK unlock data
echo "TIMING ($PROVIDER): dmbyok unlock (KMS unwrap, key set, resume) took $((($(usecs) - t0) / 1000)) ms"
check "writes resume after unlock (acked more than $A2)" wait_quietly 60 eval '[ "$(acked)" -gt "$A2" ]'
stop_writer
umount "$MNT"
check "close after unlock" $DMBYOK close data
check "open once more" $DMBYOK open $DISK data
mount -o ro /dev/mapper/data "$MNT"
check_acked_survived "$MNT/log" "lock, unlock, close and reopen"
umount "$MNT"

step "rotation: a new key version; rewrap moves the volume to it, open"
if for_provider gcp azure; then
	OLD=$(token_json $DISK | json_get key_arn)
	kms_rotate "$KEY" || fail "cannot rotate $KEY"
	check "rewrap while open" $DMBYOK rewrap $DISK
	check "the token names the key's new primary version ($(token_json $DISK | json_get key_arn))" \
		bash -c "[ '$(token_json $DISK | json_get key_arn)' != '$OLD' ]"
	check "and it is the key's current version" kms_token_key_ok "$(token_json $DISK)" "$KEY"
	check "lock and unlock under the new version" bash -c "$DMBYOK lock data --quiet && $DMBYOK unlock data --quiet"
else
	echo "AWS KMS rotation keeps the key's ARN: no re-wrap is due (rewrap.sh moves volumes between keys)"
fi
check "cryptsetup close understands a dmbyok mapping" cryptsetup close data
check "no mapping left" bash -c "! dmsetup info data >/dev/null 2>&1"
rm -f $WORK/dek
kms_stop
finish
