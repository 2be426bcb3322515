#!/usr/bin/env bash
# Key hygiene on real dm-crypt. shred: refuses an open volume and an unconfirmed run, then
# leaves no LUKS magic, no wrapped DEK and nothing blkid knows on the disk; a detached header
# too; two racing shreds do it once; a shred killed mid-wipe is finished by a re-run, a
# damaged header only with --force; a volume dmbyokd tore down (key deleted) is forgotten
# and shredded. ephemeral: swap with a key in no table and no keyring, refused over ext4.
# doctor --policy: plain swap and a plain file system under a data path are flagged (10),
# ephemeral swap and a dmbyok volume make it hold (0); the 9p root is "unknown", stably.
. "$(dirname "$0")/lib.sh"
DATA=$WORK/data
mkdir -p "$DATA"
cleanup() {
	local rc=$?
	kill -9 "${AGENT:-}" "${SHREDDER:-}" 2>/dev/null || true
	swapoff -a 2>/dev/null || true
	dmsetup remove slow 2>/dev/null || true
	[ "$rc" -eq 0 ] || release_suspended
}
trap cleanup EXIT
mapped() { dmsetup info "$1" >/dev/null 2>&1; }
# The raw device holds no LUKS magic, no wrapped DEK (as json-c writes it too: "\/"), and
# no signature blkid knows.
luks_magics() { LC_ALL=C grep -caP '(LUKS|SKUL)\xba\xbe' "$1" || true; }
wrapped_copies() { grep -caF -e "$2" -e "${2//\//\\/}" "$1" || true; }
check_shredded() { # check_shredded DEVICE WRAPPED_DEK
	check "$1: cryptsetup isLuks fails" bash -c "! cryptsetup isLuks $1"
	check "$1: blkid -p finds nothing" bash -c "! blkid -p $1"
	check "$1: no LUKS magic (LUKS\\xba\\xbe, SKUL\\xba\\xbe) anywhere" test "$(luks_magics "$1")" = 0
	check "$1: the wrapped DEK appears nowhere" test "$(wrapped_copies "$1" "$2")" = 0
}
wrapped_of() { $DMBYOK dump "$@" --json | jq -er .token.ciphertext; }

step "KMS emulator and a customer key"
start_kms
KEY=$(create_key alias/hyg)
step "a dmbyok volume with data"
check "format /dev/vda" $DMBYOK format /dev/vda --key alias/hyg --quiet
UUID=$(cryptsetup luksUUID /dev/vda)
WRAPPED=$(wrapped_of /dev/vda)
check "the oracle: the wrapped DEK is on the raw device before the shred ($(wrapped_copies /dev/vda "$WRAPPED") copies)" \
	test "$(wrapped_copies /dev/vda "$WRAPPED")" -ge 1
check "the oracle: LUKS magics too" test "$(luks_magics /dev/vda)" -ge 1
check "open" $DMBYOK open /dev/vda vol --quiet
mkfs.ext4 -q /dev/mapper/vol
mount /dev/mapper/vol "$DATA"
seq 100000 >"$DATA/numbers"
SUM=$(header_sum /dev/vda)

step "shred refuses what it must"
expect_exit 8 "shred refuses an open volume (busy)" $DMBYOK shred /dev/vda --yes
check "it names the mapping and says to close it" grep -q "open as mapping vol.*dmbyok close vol" "$WORK/err"
umount "$DATA"
check "close" $DMBYOK close vol --quiet
expect_exit 2 "without --yes and no terminal, shred refuses" $DMBYOK shred /dev/vda
check "it says to run with --yes" grep -q -- "--yes" "$WORK/err"
rc=0
printf 'yes\n' | script -qec "$DMBYOK shred /dev/vda" /dev/null >"$WORK/tty.out" 2>&1 || rc=$?
cat "$WORK/tty.out"
check "on a terminal, an answer other than YES is a no (exit 2)" test $rc -eq 2
check "the prompt showed the volume, its key and the ranges" \
	bash -c "grep -q 'volume $UUID' '$WORK/tty.out' && grep -q '$KEY' '$WORK/tty.out' && grep -q 'keyslot area' '$WORK/tty.out'"
check "every refusal left the header as it was" test "$(header_sum /dev/vda)" = "$SUM"

step "shred --yes"
check "shred --yes" bash -c "$DMBYOK shred /dev/vda --yes --json --debug >'$WORK/shred.json' 2>'$WORK/shred.err'"
cat "$WORK/shred.json"
check "the record names the volume and its key" \
	jq -e --arg u "$UUID" --arg k "$KEY" '.volume_uuid == $u and .key_arn == $k and .device == "/dev/vda"' "$WORK/shred.json"
check "the wiped ranges are the 16 MiB header area, contiguous from 0" \
	jq -e '[.wiped[] | .offset] == [0, 16384, 32768] and ([.wiped[] | .length] | add) == 16777216' "$WORK/shred.json"
check "the journal entry carries DEVICE, VOLUME_UUID, KEY_ARN and WIPED" \
	bash -c "grep 'Shredded /dev/vda' '$WORK/shred.err' | grep 'DEVICE=/dev/vda' | grep 'VOLUME_UUID=$UUID' | grep 'KEY_ARN=$KEY' | grep -q 'WIPED=\"/dev/vda 32768+16744448 keyslot area\"'"
check_shredded /dev/vda "$WRAPPED"
check "the customer key is still enabled" \
	eval '[ "$(kms_as customer DescribeKey "{\"KeyId\":\"$KEY\"}" | json_get KeyMetadata.KeyState)" = Enabled ]'
expect_exit 7 "open fails even with the key enabled: not a dmbyok volume" $DMBYOK open /dev/vda vol
check "the message says so" grep -q "not a LUKS2 volume" "$WORK/err"
expect_exit 7 "a second shred has nothing to do" $DMBYOK shred /dev/vda --yes
check "and says it is already shredded" grep -q "already shredded" "$WORK/err"

step "two concurrent shreds of one device"
check "format /dev/vda again" $DMBYOK format /dev/vda --key alias/hyg --quiet
WRAPPED=$(wrapped_of /dev/vda)
pids=()
for i in 1 2; do
	(rc=0; $DMBYOK shred /dev/vda --yes >"$WORK/race.$i.out" 2>"$WORK/race.$i.err" || rc=$?; echo $rc >"$WORK/race.$i.rc") &
	pids+=($!)
done
wait "${pids[@]}"
echo "exit codes: $(cat "$WORK"/race.*.rc | tr '\n' ' ')"
check "exactly one shredded it" test "$(grep -lx 0 "$WORK"/race.*.rc | wc -l)" -eq 1
LOSER=$(grep -Lx 0 "$WORK"/race.*.rc)
LOSER=${LOSER%.rc}
check "the other said busy (8) or already shredded (7)" \
	bash -c "{ grep -qx 8 '$LOSER.rc' && grep -q 'dmbyok operation' '$LOSER.err'; } || { grep -qx 7 '$LOSER.rc' && grep -q 'already shredded' '$LOSER.err'; }"
cat "$LOSER.err"
check_shredded /dev/vda "$WRAPPED"

step "a detached header, confirmed by typing YES"
check "format /dev/vdc with a detached header" $DMBYOK format /dev/vdc --header "$WORK/vdc.hdr" --key alias/hyg --quiet
WRAPPED=$(wrapped_of /dev/vdc --header "$WORK/vdc.hdr")
check "the oracle: the header file holds the wrapped DEK" test "$(wrapped_copies "$WORK/vdc.hdr" "$WRAPPED")" -ge 1
rc=0
printf 'YES\n' | script -qec "$DMBYOK shred /dev/vdc --header $WORK/vdc.hdr" /dev/null >"$WORK/tty.out" 2>&1 || rc=$?
cat "$WORK/tty.out"
check "YES on a terminal shreds it" test $rc -eq 0
check "the header file: no LUKS magic" test "$(luks_magics "$WORK/vdc.hdr")" = 0
check "the header file: no wrapped DEK" test "$(wrapped_copies "$WORK/vdc.hdr" "$WRAPPED")" = 0
check "the header file: no signature" bash -c "! blkid -p '$WORK/vdc.hdr'"
expect_exit 7 "open --header fails" $DMBYOK open /dev/vdc x --header "$WORK/vdc.hdr"

step "kill -9 in the middle of a shred; the re-run finishes it"
modprobe -d "$VM_MODULES_ROOT" dm-delay || fail "no dm-delay module"
check "format /dev/vdb" $DMBYOK format /dev/vdb --key alias/hyg --quiet
WRAPPED=$(wrapped_of /dev/vdb)
SECTORS=$(blockdev --getsz /dev/vdb)
# Reads at full speed, every write 400 ms late: the wipe takes seconds, and a kill lands in it.
dmsetup create slow --table "0 $SECTORS delay /dev/vdb 0 0 /dev/vdb 0 400"
# The first MiB of the keyslot area (the DEK keyslot's material), read past the page cache.
first_mib_zero() { [ "$(dd if=/dev/vdb bs=4096 skip=8 count=256 iflag=direct status=none | tr -d '\0' | wc -c)" -eq 0 ]; }
check "the keyslot area holds key material" eval '! first_mib_zero'
$DMBYOK shred /dev/mapper/slow --yes >"$WORK/killed.out" 2>"$WORK/killed.err" &
SHREDDER=$!
t=$(wait_for 30 first_mib_zero) || { cat "$WORK/killed.err"; fail "the shred never started wiping"; }
kill -9 $SHREDDER
echo "the first MiB was zero after $t s: killed"
wait $SHREDDER 2>/dev/null || true
SHREDDER=
cat "$WORK/killed.err"
check "it was killed before it finished" bash -c "! grep -q Shredded '$WORK/killed.err'"
dmsetup remove slow
echo "after the kill: isLuks $(cryptsetup isLuks /dev/vdb && echo yes || echo no), wrapped DEK copies $(wrapped_copies /dev/vdb "$WRAPPED")"
check "the header still loads (killed in the keyslot area, wiped first)" cryptsetup isLuks /dev/vdb
check "the re-run finishes the shred (no --force needed)" $DMBYOK shred /dev/vdb --yes --quiet
check_shredded /dev/vdb "$WRAPPED"

step "a damaged header (as if killed in the last header copy): only with --force"
check "format /dev/vdb" $DMBYOK format /dev/vdb --key alias/hyg --quiet
WRAPPED=$(wrapped_of /dev/vdb)
# The secondary copy gone and the primary's JSON area zeroed: only its binary header is left.
dd if=/dev/zero of=/dev/vdb bs=4096 seek=1 count=7 conv=notrunc,fsync status=none
SUM=$(header_sum /dev/vdb)
expect_exit 7 "shred --yes refuses a header that no longer loads" $DMBYOK shred /dev/vdb --yes
check "it says what is left and to use --force" grep -q "no longer loads.*--force" "$WORK/err"
check "the refusal changed nothing" test "$(header_sum /dev/vdb)" = "$SUM"
check "shred --yes --force wipes what is left" bash -c "$DMBYOK shred /dev/vdb --yes --force --json >'$WORK/forced.json'"
check "its record says the header was damaged" jq -e '.damaged == true and .volume_uuid == null' "$WORK/forced.json"
check_shredded /dev/vdb "$WRAPPED"

step "ephemeral: a key in no table, no keyring"
check "ephemeral /dev/vdd eswap" $DMBYOK ephemeral /dev/vdd eswap
TABLE=$(dmsetup table --showkeys eswap)
echo "$TABLE"
check "aes-xts-plain64, key named in the kernel keyring" grep -q " crypt aes-xts-plain64 :64:logon:dmbyok-ephemeral:eswap " <<<"$TABLE"
check "dmsetup table --showkeys shows no hex key" bash -c "! grep -Eq '[0-9a-fA-F]{64}' <<<'$TABLE'"
check "no dmbyok key is left in any keyring" bash -c "! grep -q dmbyok /proc/keys && ! keyctl show @u | grep -q dmbyok"
check "its dm UUID marks it dmbyok-ephemeral" bash -c "dmsetup info -c --noheadings -o uuid eswap | grep -qx 'CRYPT-PLAIN-DMBYOK-EPHEMERAL-eswap'"
check "cryptsetup status understands it (plain)" bash -c "cryptsetup status eswap | grep -q 'type:    PLAIN'"
check "dmbyok list does not take it for a volume" bash -c "! $DMBYOK list --json | jq -e '.[] | select(.name == \"eswap\")' >/dev/null"
check "mkswap on it" mkswap -q /dev/mapper/eswap
check "swapon" swapon /dev/mapper/eswap
check "the kernel swaps on it" grep -q "^$(readlink -f /dev/mapper/eswap)\|^/dev/mapper/eswap" /proc/swaps
check "the raw disk shows no swap signature" bash -c "! blkid -p /dev/vdd"
expect_exit 8 "close refuses it while it is swap" $DMBYOK close eswap
check "and says swapoff" grep -q "swapoff" "$WORK/err"
check "swapoff" swapoff /dev/mapper/eswap
check "close removes it" $DMBYOK close eswap
check "gone" bash -c "! dmsetup info eswap >/dev/null 2>&1"
pids=()
for n in e1 e2; do
	(rc=0; $DMBYOK ephemeral /dev/vdd $n --quiet 2>"$WORK/eph.$n.err" || rc=$?; echo $rc >"$WORK/eph.$n.rc") &
	pids+=($!)
done
wait "${pids[@]}"
echo "exit codes: $(cat "$WORK"/eph.*.rc | tr '\n' ' ')"
check "two concurrent ephemeral mappings of one device: exactly one is made" \
	test "$(dmsetup ls --target crypt | grep -Ec '^e[12]\s')" -eq 1
check "the other says busy (8)" test "$(cat "$WORK"/eph.*.rc | sort | tr -d '\n')" = 08
check "close the one made" $DMBYOK close "$(dmsetup ls --target crypt | grep -Eo '^e[12]')" --quiet
# What a kill -9 between creating the device and loading its table would leave.
dmsetup create e9 --notable --uuid CRYPT-PLAIN-DMBYOK-EPHEMERAL-e9
check "close removes an ephemeral mapping left without a table" $DMBYOK close e9
check "gone" bash -c "! dmsetup info e9 >/dev/null 2>&1"
# For contrast, what crypttab's swap option makes: a cryptsetup plain mapping, key as hex.
cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /dev/urandom \
	/dev/vdd plainswap
check "(a cryptsetup plain mapping shows its key as hex in the same table)" \
	bash -c "dmsetup table --showkeys plainswap | grep -Eq ' aes-xts-plain64 [0-9a-f]{128} '"
cryptsetup close plainswap
mkfs.ext4 -q /dev/vdc
expect_exit 2 "ephemeral refuses a device holding ext4" $DMBYOK ephemeral /dev/vdc ex
check "it names the signature and --force" grep -q "ext4.*--force" "$WORK/err"
check "and mapped nothing" bash -c "! dmsetup info ex >/dev/null 2>&1"

step "doctor --policy: plain swap and a plain file system under a data path"
mkswap -q /dev/vdd
swapon /dev/vdd
mount /dev/vdc "$DATA"
expect_exit 10 "the policy does not hold (exit 10)" $DMBYOK doctor --policy --data-path "$DATA"
cat "$WORK/out"
rc=0
$DMBYOK doctor --policy --data-path "$DATA" --json >"$WORK/policy.json" || rc=$?
check "--json: same exit code" test $rc -eq 10
check "the data mount is a violation: plain /dev/vdc" \
	jq -e --arg d "$DATA" '.holds == false and any(.findings[]; .check == "data" and .path == $d and .storage == "plain" and .status == "violation")' "$WORK/policy.json"
check "the swap is a violation: plain /dev/vdd" \
	jq -e 'any(.findings[]; .check == "swap" and .path == "/dev/vdd" and .storage == "plain" and .status == "violation")' "$WORK/policy.json"
check "tmpfs /tmp is flagged because of that swap, and says so" \
	jq -e 'any(.findings[]; .check == "tmp" and .path == "/tmp" and .status == "violation" and (.reason | test("swap /dev/vdd is not encrypted")))' "$WORK/policy.json"
# The guest's root is the host's, over 9p (the source tree may be a 9p mount of its own, as
# for a clone under the host's /tmp): no block device, so the policy cannot be proven.
expect_exit 10 "a data path on the 9p root is reported (exit 10)" $DMBYOK doctor --policy --data-path "$DMBYOK_SOURCE_DIR"
cp "$WORK/out" "$WORK/9p.1"
$DMBYOK doctor --policy --data-path "$DMBYOK_SOURCE_DIR" >"$WORK/9p.2" || true
cat "$WORK/9p.1"
check "as unknown: 9p, not a block device" grep -q "^UNKNOWN data [^ ]* (9p .*): on 9p (not on a block device): dmbyok cannot tell" "$WORK/9p.1"
check "the output is stable" cmp "$WORK/9p.1" "$WORK/9p.2"

step "doctor --policy: ephemeral swap and a dmbyok volume make it hold"
swapoff /dev/vdd
umount "$DATA"
expect_exit 2 "ephemeral refuses the device with a swap signature" $DMBYOK ephemeral /dev/vdd eswap
check "ephemeral --force maps it" $DMBYOK ephemeral /dev/vdd eswap --force --sector-size 4096
mkswap -q /dev/mapper/eswap
swapon /dev/mapper/eswap
check "format /dev/vdc (it held ext4: --force)" $DMBYOK format /dev/vdc --key alias/hyg --force --quiet
check "open it" $DMBYOK open /dev/vdc data --quiet
mkfs.ext4 -q /dev/mapper/data
mount /dev/mapper/data "$DATA"
check "the policy holds (exit 0)" bash -c "$DMBYOK doctor --policy --data-path '$DATA' | tee '$WORK/out'"
check "--json: the data mount is on the dmbyok volume, under the customer key" \
	bash -c "$DMBYOK doctor --policy --data-path '$DATA' --json | jq -e --arg d '$DATA' --arg k '$KEY' '.holds and any(.findings[]; .check == \"data\" and .path == \$d and .storage == \"dmbyok\" and .mapping == \"data\" and .key_arn == \$k) and any(.findings[]; .check == \"swap\" and .storage == \"ephemeral\" and .mapping == \"eswap\") and any(.findings[]; .check == \"tmp\" and (.reason | test(\"all swap is encrypted\")))' >/dev/null"

step "a volume dmbyokd tore down for good (key deleted) is forgotten and shredded"
GONE=$(create_key alias/gone)
check "format /dev/vdb under another key" $DMBYOK format /dev/vdb --key alias/gone --quiet
WRAPPED=$(wrapped_of /dev/vdb)
check "open it as t" $DMBYOK open /dev/vdb t --quiet
POLICED=$WORK/policed
mkdir -p "$POLICED"
start_agent --check-interval 1 --restore-interval 1 --policy-data-paths "$POLICED:/nonexistent/yet" \
	--policy-unmount yes
kms_as customer ScheduleKeyDeletion "{\"KeyId\":\"$GONE\",\"PendingWindowInDays\":7}" >/dev/null
aws_expire_deletion "$GONE"
t=$(wait_for 30 eval "! mapped t && jq -e .torn_down '$DMBYOK_RUNTIME_DIR/mappings/t.json'") ||
	{ cat "$WORK/agent.log"; fail "t was not torn down"; }
echo "key deleted -> t torn down in $t s"
check "list shows it torn down" bash -c "$DMBYOK list --json | jq -e '.[] | select(.name == \"t\")' >/dev/null"
check "the agent never took the ephemeral mapping for a volume" \
	bash -c "! grep -q eswap '$WORK/agent.log' && ! $DMBYOK list --json | jq -e '.[] | select(.name == \"eswap\")' >/dev/null"
agent_knows_t() { $DMBYOK status t --json 2>/dev/null | jq -e '.agent.watched == true' >/dev/null; }
check "the agent watches torn-down t" agent_knows_t
check "shred --yes" bash -c "$DMBYOK shred /dev/vdb --yes | tee '$WORK/out'"
check "it says it forgot t" grep -qx "forgot    t" "$WORK/out"
check "t's record is gone" test ! -e "$DMBYOK_RUNTIME_DIR/mappings/t.json"
check_shredded /dev/vdb "$WRAPPED"
# shred asks the agent to rescan (no device-mapper event announces a forgotten record).
t=$(wait_for 10 eval '! agent_knows_t') || fail "the agent still shows t 10 s after the shred"
echo "shred -> the agent dropped t in $t s (its backstop rescan: 60 s)"

step "dmbyokd enforces its data paths: a plain file system there is reported and unmounted"
# The dmbyok volume first (it must stay), then a plain one beside it (it must go).
mkdir -p "$POLICED/db" "$POLICED/plain"
mount /dev/mapper/data "$POLICED/db"
mkfs.ext4 -q -F /dev/vdb
mount /dev/vdb "$POLICED/plain"
t=$(wait_for 30 eval "! mountpoint -q '$POLICED/plain'") ||
	{ cat "$WORK/agent.log"; fail "the plain file system under the data path stayed mounted"; }
echo "plain mount under a data path -> unmounted by dmbyokd in $t s"
check "the agent said why, naming the data path and the device" \
	grep -q "Data path $POLICED: $POLICED/plain is mounted from /dev/vdb, which is not under the customer's key" "$WORK/agent.log"
check "and that it unmounted it" grep -q "Unmounted $POLICED/plain: a file system under data path $POLICED" "$WORK/agent.log"
check "the dmbyok volume under the same data path stays mounted" mountpoint -q "$POLICED/db"
check "and was never reported" bash -c "! grep -q 'Data path .*$POLICED/db' '$WORK/agent.log'"
check "the root file system holding the data path is never unmounted" bash -c "! grep -q 'Unmounted /:\|Unmounted $POLICED:' '$WORK/agent.log'"
umount "$POLICED/db"
kill $AGENT
wait $AGENT 2>/dev/null || true
AGENT=
check "list no longer shows it" bash -c "! $DMBYOK list --json | jq -e '.[] | select(.name == \"t\")' >/dev/null"

step "clean up"
swapoff /dev/mapper/eswap
check "close removes the ephemeral mapping" $DMBYOK close eswap
umount "$DATA"
check "close the volume" $DMBYOK close data --quiet
stop_kms
finish
