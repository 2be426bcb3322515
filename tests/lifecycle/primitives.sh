#!/usr/bin/env bash
# The primitives every entry point relies on, under concurrency and faults, on real
# dm-crypt: one mapping per device however many opens race; lock/unlock serialised per
# device; interrupted locks repaired; cached plaintext dropped at lock; a lock bounded on a
# stalled disk (and a kill -9 in the middle of one); the key check bound to the LUKS2
# header (cryptsetup reencrypt is refused, version 1 tokens upgraded in place).
. "$(dirname "$0")/lib.sh"
DISK=/dev/vda
SLOW=/dev/vdb
MNT=$WORK/mnt
mkdir -p "$MNT"

state() { $DMBYOK status "$1" --json | jq -r .state; }
n_crypt_mappings() { dmsetup ls --target crypt 2>/dev/null | grep -vc '^No devices found' || true; }

step "KMS emulator, a customer key, a volume"
start_kms
create_key alias/prim >/dev/null
check "format" $DMBYOK format $DISK --key alias/prim --quiet
check "the token is version 2, bound to the header" \
	bash -c "token_json() { cryptsetup token export --token-id 0 $DISK; }; token_json | jq -e '.version == 2 and (.binding | startswith(\"sha256:\"))' >/dev/null"

step "8 concurrent opens of one device, under different and equal names"
pids=()
for i in 1 2 3 4 5 6 7 8; do
	name=$([ $((i % 2)) -eq 0 ] && echo same || echo "v$i")
	(rc=0; $DMBYOK open $DISK "$name" --quiet >/dev/null 2>"$WORK/open.$i.err" || rc=$?; echo $rc >"$WORK/open.$i.rc") &
	pids+=($!)
done
wait "${pids[@]}" # not a bare wait: the KMS emulator is a child too
codes=$(cat "$WORK"/open.*.rc | sort | uniq -c | tr -s ' ' | tr '\n' ';')
echo "exit codes (count code): $codes"
check "exactly one open succeeded" test "$(grep -lx 0 "$WORK"/open.*.rc | wc -l)" -eq 1
check "every other open exited 8 (busy)" test "$(grep -Lx 0 "$WORK"/open.*.rc | xargs cat | sort -u)" = 8
check "exactly one crypt mapping exists" test "$(n_crypt_mappings)" -eq 1
NAME=$(dmsetup ls --target crypt | awk '{print $1}')
check "it is a dmbyok mapping" test "$(state "$NAME")" = active
check "close it" $DMBYOK close "$NAME" --quiet

step "lock and unlock serialised per device"
check "open" $DMBYOK open $DISK data --quiet
check "lock" $DMBYOK lock data --quiet
aws_fault '{"operation":"Decrypt","fault":"latency","latency_ms":3000,"count":1}'
t0=$(date +%s.%N)
$DMBYOK unlock data --quiet &
UNLOCK=$!
# The unlock holds the device lock from before its Decrypt; once the emulator
# has taken that Decrypt (the one-shot fault is consumed), a lock must queue.
# The lock below must come while the unlock still waits out its 3 s.
no_faults_left() { [ "$(emulator_ctl GET faults | jq '.faults | length')" = 0 ]; }
check "the slow unlock's Decrypt reached the KMS" wait_quietly 20 no_faults_left
# This lock arrives while unlock waits for the KMS: it must wait, then win.
check "a lock issued during a slow unlock succeeds" $DMBYOK lock data --quiet
check "the unlock it waited for succeeded too" wait $UNLOCK
check "the final state is the last command's: locked" test "$(state data)" = locked
echo "slow unlock + lock took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
pids=()
for i in $(seq 12); do
	cmd=$([ $((RANDOM % 2)) -eq 0 ] && echo lock || echo unlock)
	(rc=0; $DMBYOK $cmd data --quiet 2>"$WORK/storm.$i.err" || rc=$?; echo $rc >"$WORK/storm.$i.rc") &
	pids+=($!)
done
wait "${pids[@]}"
check "a storm of 12 concurrent lock/unlock: every one succeeded" \
	test "$(cat "$WORK"/storm.*.rc | sort -u)" = 0
check "no half state after the storm" bash -c "s=\$($DMBYOK status data --json | jq -r .state); [ \$s = active ] || [ \$s = locked ]"
check "a final unlock leaves it active" $DMBYOK unlock data --quiet
check "active" test "$(state data)" = active

step "interrupted locks (suspended with the key still loaded) are seen and repaired"
dmsetup suspend data
check "status names the half state" test "$(state data)" = suspended-keyed
check "lock repairs it by wiping the key" $DMBYOK lock data --quiet
check "locked, no key in the table" bash -c "[ \$($DMBYOK status data --json | jq -r .state) = locked ] && ! dmsetup table data | grep -q ':logon:'"
check "unlock" $DMBYOK unlock data --quiet
dmsetup suspend data
check "unlock repairs it by resuming" $DMBYOK unlock data --quiet
check "active again" test "$(state data)" = active

step "lock drops cached plaintext"
mkfs.ext4 -q /dev/mapper/data
mount /dev/mapper/data "$MNT"
seq 100000 >"$MNT/cached.txt"
sync
SUM=$(sha256sum <"$MNT/cached.txt")
cat "$MNT/cached.txt" >/dev/null # now in the page cache
check "lock" $DMBYOK lock data --quiet
(sha256sum <"$MNT/cached.txt" >"$WORK/cached.sum") &
READER=$!
# in_d PID: PID or one of its children sleeps uninterruptibly (waits on the held device).
in_d() {
	local p
	for p in "$1" $(pgrep -P "$1"); do
		grep -q '^State:[[:space:]]*D' "/proc/$p/status" 2>/dev/null && return 0
	done
	return 1
}
check "the read reached the locked device and waits there" wait_quietly 60 in_d $READER
check "a read of a file cached before the lock waits (nothing served)" \
	bash -c "kill -0 $READER 2>/dev/null && [ ! -s '$WORK/cached.sum' ]"
check "unlock" $DMBYOK unlock data --quiet
wait $READER
check "the waiting read completes after unlock, with the right content" test "$(cat "$WORK/cached.sum")" = "$SUM"
umount "$MNT"
check "close" $DMBYOK close data --quiet

step "version 1 tokens keep opening and are upgraded in place"
unwrap_dek_to $DISK "$WORK/dek"
DEK_HEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n')
UUID=$(cryptsetup luksUUID $DISK)
KCV1=$(printf 'dmbyok-kcv-v1%s' "$UUID" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$DEK_HEX" | awk '{print $NF}' | cut -c1-32)
token_json $DISK | jq -c ".version = 1 | del(.binding) | .key_check = \"hmac-sha256-128:$KCV1\"" >"$WORK/v1.json"
check "install a version 1 token" cryptsetup token import --token-id 0 --token-replace --json-file "$WORK/v1.json" $DISK
check "dump reads it" bash -c "$DMBYOK dump $DISK --json | jq -e '.token.version == 1' >/dev/null"
check "open a version 1 volume" $DMBYOK open $DISK data --quiet
check "its token is now version 2, bound to the header" \
	bash -c "cryptsetup token export --token-id 0 $DISK | jq -e '.version == 2 and (.binding | length > 10)' >/dev/null"
check "close" $DMBYOK close data --quiet
check "the upgraded token opens" $DMBYOK open $DISK data --quiet
mount /dev/mapper/data "$MNT"
echo "written before reencrypt" >"$MNT/marker"
umount "$MNT"
check "close" $DMBYOK close data --quiet

step "a header re-encrypted with cryptsetup is refused (exit 7), stock cryptsetup still opens it"
PBKDF=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
check "cryptsetup reencrypt --init-only" cryptsetup reencrypt --init-only --key-file "$WORK/dek" "${PBKDF[@]}" $DISK
expect_exit 7 "open refuses a volume with a re-encryption in progress" $DMBYOK open $DISK data
check "the message names the cause" grep -q "re-encryption in progress" "$WORK/err"
check "cryptsetup finishes the re-encryption (new volume key)" \
	cryptsetup reencrypt --resume-only --key-file "$WORK/dek" $DISK
expect_exit 7 "open refuses the re-encrypted header before any KMS call" $DMBYOK open $DISK data
check "the message names the cause" grep -q "reencrypt" "$WORK/err"
check "no mapping was made" bash -c "! dmsetup info data >/dev/null 2>&1"
check "stock cryptsetup opens it with the old keyslot passphrase" cryptsetup open --key-file "$WORK/dek" $DISK plain
mount -o ro /dev/mapper/plain "$MNT"
check "and the data is intact" test "$(cat "$MNT/marker")" = "written before reencrypt"
umount "$MNT"
cryptsetup close plain
rm -f "$WORK/dek"

step "a lock is bounded on a stalled disk"
SECTORS=$(blockdev --getsz $SLOW)
dmsetup create lower --table "0 $SECTORS linear $SLOW 0"
# Whatever fails below, never leave the disk stalled: the guest's final sync would hang.
trap 'dmsetup resume lower 2>/dev/null || true' EXIT
check "format on a dm-linear we can stall" $DMBYOK format /dev/mapper/lower --key alias/prim --quiet
check "open" $DMBYOK open /dev/mapper/lower st --quiet
# No lazy inode-table initialisation: it writes in the background for minutes after mount,
# and the first case needs a file system with no I/O in flight.
mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/st
mount /dev/mapper/st "$MNT"
echo "before the stall" >"$MNT/f"
sync
sleep 1
dmsetup suspend lower # the disk stops answering
t0=$(date +%s.%N)
# The bound: it returns by itself, well before the 30 s default (a hang guard, not a figure:
# the time is printed, bench/ measures it).
check "lock --timeout 8 on an idle file system over a stalled disk succeeds, bounded" \
	timeout 25 $DMBYOK lock st --timeout 8 --quiet
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
echo "lock on a stalled disk took $took s"
check "the key is gone from the table" bash -c "! dmsetup table st | grep -q ':logon:'"
dmsetup resume lower
check "unlock after the disk recovers" $DMBYOK unlock st --quiet
check "data readable" test "$(cat "$MNT/f")" = "before the stall"

start_writer "$MNT/log"
check "the writer runs" wait_quietly 60 eval '[ -n "$(acked)" ]'
dmsetup suspend --nolockfs lower # stalls with the writer's I/O in flight
writer_stuck() { in_d "$WRITER"; } # in fsync on the stalled disk
check "the writer's I/O is stuck in flight" wait_quietly 60 writer_stuck
t0=$(date +%s.%N)
# Busy (8) means it gave up by itself; timeout 25 (a hang guard) that it did by its 5 s,
# not the 30 s default.
expect_exit 8 "lock --timeout 5 with I/O stuck in flight reports that it could not (busy)" \
	timeout 25 $DMBYOK lock st --timeout 5
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
echo "failed lock took $took s"
check "and left the mapping as it was (active, keyed)" \
	bash -c "[ \$($DMBYOK status st --json | jq -r .state) = active ] && dmsetup table st | grep -q ':logon:'"

step "kill -9 in the middle of a lock leaves a state the next command repairs"
$DMBYOK lock st --timeout 60 --quiet 2>/dev/null &
LOCKER=$!
# Its suspend runs in a child of its own (which outlives the kill): once that child is in the
# kernel's suspend, waiting for the stuck I/O, the kill lands in the middle of the lock.
suspending() {
	local p
	for p in $(pgrep -P "$LOCKER"); do grep -q dm_suspend "/proc/$p/stack" 2>/dev/null && return 0; done
	return 1
}
[ -r /proc/self/stack ] || fail "no /proc/PID/stack in this kernel: cannot see the lock's suspend"
check "the lock's suspend waits for the stuck I/O" wait_quietly 60 suspending
kill -9 $LOCKER
wait $LOCKER 2>/dev/null || true
dmsetup resume lower # the stuck I/O completes, then the orphaned suspend does
check "status shows the interrupted lock" wait_quietly 60 eval '[ "$(state st)" = suspended-keyed ]'
check "unlock repairs it" $DMBYOK unlock st --quiet
A1=$(acked)
check "writes flow again (more than $A1 acknowledged)" wait_quietly 60 eval '[ "$(acked)" -gt "$A1" ]'
stop_writer
umount "$MNT"
check "close" $DMBYOK close st --quiet
check "reopen" $DMBYOK open /dev/mapper/lower st --quiet
mount -o ro /dev/mapper/st "$MNT"
check_acked_survived "$MNT/log" "the stall, the failed lock and the kill"
umount "$MNT"
$DMBYOK close st --quiet
dmsetup remove lower
stop_kms
finish
