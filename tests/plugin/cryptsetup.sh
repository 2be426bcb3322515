#!/usr/bin/env bash
# Stock cryptsetup opens a dmbyok volume through libcryptsetup-token-dmbyok.so: the data
# written through `dmbyok open` reads back; the mapping is a dmbyok mapping for status, list,
# lock and unlock; luksDump shows the plugin's summary; `token import` refuses a malformed
# token; a revoked key fails with the plugin's message and an errno that stops the token
# loop; a KMS that hangs fails within the plugin's bound, one that is down with -EAGAIN; a process
# that opened through the plugin holds no copy of the DEK afterwards.
#
# libcryptsetup 2.6 loads plugins only from its compiled-in directory: each command that
# should see ours runs in a private mount namespace with a directory holding the system's
# plugins plus ours bound over it (with_plugin); everything else sees the stock system.
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
DISK=/dev/vda
MNT=$WORK/mnt
PLUGIN=$DMBYOK_BUILD_DIR/src/plugin/libcryptsetup-token-dmbyok.so
TOKEN_OPEN=$DMBYOK_BUILD_DIR/tests/plugin/token-open
MEMSCAN=$DMBYOK_BUILD_DIR/tests/lifecycle/memscan
SYSTEM_PLUGINS=/usr/lib/x86_64-linux-gnu/cryptsetup
mkdir -p "$MNT" "$WORK/plugins"

[ -r "$PLUGIN" ] || fail "no plugin at $PLUGIN (build first)"
cp -a "$SYSTEM_PLUGINS"/. "$WORK/plugins/" 2>/dev/null || true
cp "$PLUGIN" "$WORK/plugins/"
WITH_PLUGIN=(unshare --mount --propagation private sh -c
	"mount --bind \"\$0\" $SYSTEM_PLUGINS && exec \"\$@\"" "$WORK/plugins")
with_plugin() { "${WITH_PLUGIN[@]}" "$@"; }
# expect_fail "what" CMD...: CMD must fail (cryptsetup's exit codes are its own business).
expect_fail() {
	local what=$1 got=0; shift
	"$@" >"$WORK/out" 2>"$WORK/err" || got=$?
	[ "$got" -ne 0 ] || { cat "$WORK/out" "$WORK/err" >&2; fail "$what: it succeeded"; }
	ok "$what (exit $got: $(tail -n 1 "$WORK/err"))"
}
# run_timed CMD...: runs CMD under a 120 s guard (a hang is a failure, not a wait), its
# output in $WORK/out and $WORK/err; sets RC and SECS.
run_timed() {
	local t0
	t0=$(date +%s.%N)
	RC=0
	timeout 120 "$@" >"$WORK/out" 2>"$WORK/err" || RC=$?
	SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	[ "$RC" -ne 124 ] || { cat "$WORK/err" >&2; fail "$* hung (killed after 120 s)"; }
}
no_mapping() { ! dmsetup info "$1" >/dev/null 2>&1; }

step "KMS emulator, a customer key, a dmbyok volume with data written through dmbyok"
start_kms
KEY=$(create_key alias/plugin)
check "format" $DMBYOK format $DISK --key alias/plugin --context service=plugin --quiet
check "dmbyok open" $DMBYOK open $DISK data --quiet
mkfs.ext4 -q /dev/mapper/data && mount /dev/mapper/data "$MNT"
head -c 4M /dev/urandom >"$MNT/blob"
SUM=$(sha256sum <"$MNT/blob")
echo "written through dmbyok" >"$MNT/hello"
umount "$MNT"
check "dmbyok close" $DMBYOK close data --quiet
unwrap_dek_to $DISK "$WORK/dek" # the test's oracle: KMS Decrypt through curl

step "without the plugin, stock cryptsetup has no way in (control)"
expect_fail "cryptsetup open --token-only fails without the plugin" \
	cryptsetup open --token-only $DISK stock
check "no mapping was made" no_mapping stock

step "with the plugin, stock cryptsetup opens it"
check "cryptsetup open --token-only" with_plugin cryptsetup open --token-only $DISK stock
mount -o ro /dev/mapper/stock "$MNT"
check "the data written through dmbyok reads back" \
	test "$(cat "$MNT/hello")" = "written through dmbyok"
check "all 4 MiB of it" test "$(sha256sum <"$MNT/blob")" = "$SUM"
umount "$MNT"
check "cryptsetup status calls it LUKS2" bash -c "cryptsetup status stock | grep -q 'type:.*LUKS2'"
check "one audit line for the plugin's Decrypt, by the host's principal" \
	bash -c "tail -n 1 '$WORK/audit.log' | jq -e 'select(.operation == \"Decrypt\" and .result == \"Success\" and .access_key_id == \"AKIDHOST000000000001\")'"

step "the mapping is a dmbyok mapping for dmbyok"
$DMBYOK status stock --json >"$WORK/status.json"
check "dmbyok status shows it active" jq -e '.state == "active"' "$WORK/status.json"
check "dmbyok status names its key" jq -e --arg k "$KEY" '.key_arn == $k' "$WORK/status.json"
check "dmbyok list lists it" bash -c "$DMBYOK list --json | jq -e '[.. | objects | select(.name? == \"stock\")] | length == 1'"
check "dmbyok lock" $DMBYOK lock stock --quiet
check "locked" test "$(state stock)" = locked
DEK_HEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n')
check "its table no longer names a key" bash -c "! dmsetup table stock | grep -q ':logon:'"
check "and holds no key bytes either" bash -c "! dmsetup table --showkeys stock | grep -qi $DEK_HEX"
check "dmbyok unlock (a KMS Decrypt of its own)" $DMBYOK unlock stock --quiet
check "active again" test "$(state stock)" = active
mount -o ro /dev/mapper/stock "$MNT"
check "data intact after lock and unlock" test "$(sha256sum <"$MNT/blob")" = "$SUM"
umount "$MNT"
check "cryptsetup close" cryptsetup close stock

step "a process that opened through the plugin keeps no copy of the DEK"
coproc OPENER { exec "${WITH_PLUGIN[@]}" "$TOKEN_OPEN" $DISK scan --hold 2>"$WORK/opener.err"; }
read -r -t 120 line <&"${OPENER[0]}" || fail "token-open did not report: $(cat "$WORK/opener.err")"
[ "$line" = "result 0 ok" ] || fail "token-open said: $line $(cat "$WORK/opener.err")"
ok "crypt_activate_by_token returned keyslot 0; the opener stays alive (pid $OPENER_PID)"
check "the opener is token-open itself (exec'd through unshare and sh)" \
	bash -c "[ \"\$(cat /proc/$OPENER_PID/comm)\" = token-open ]"
check "the plugin is mapped in it (and stays: nodelete)" \
	grep -q libcryptsetup-token-dmbyok.so /proc/$OPENER_PID/maps
expect_exit 0 "no DEK (raw, either half, base64, hex) in its memory" \
	$MEMSCAN "$WORK/dek" --pid $OPENER_PID
tail -c 64 -f "$WORK/dek" >/dev/null &
CONTROL=$!
check "the control process has read the DEK" wait_quietly 60 has_read $CONTROL "$WORK/dek"
expect_exit 1 "positive control: the scanner finds the DEK in a process that read it" \
	$MEMSCAN "$WORK/dek" --pid $CONTROL
kill $CONTROL
exec {OPENER[1]}>&-
wait $OPENER_PID || true
check "cryptsetup close" cryptsetup close scan

step "luksDump shows the plugin's summary, and no secret"
with_plugin cryptsetup luksDump $DISK >"$WORK/dump"
sed -n '/^Tokens:/,/^Digests:/p' "$WORK/dump"
check "the key as the operator named it" grep -q 'dmbyok key: alias/plugin' "$WORK/dump"
check "its ARN" grep -qF "key ARN:    $KEY" "$WORK/dump"
check "the region" grep -q 'region:     us-east-1' "$WORK/dump"
check "the encryption context" grep -q '"service":"plugin"' "$WORK/dump"
check "the token version" grep -q 'version:    2' "$WORK/dump"
CIPHERTEXT=$(token_json $DISK | json_get ciphertext)
check "not the wrapped key" bash -c "! grep -qF '${CIPHERTEXT:0:40}' '$WORK/dump'"

step "token import: a malformed dmbyok token is refused by the plugin"
token_json $DISK | jq -c '.version = 9' >"$WORK/bad-version.json"
token_json $DISK | jq -c 'del(.ciphertext)' >"$WORK/bad-ciphertext.json"
BEFORE=$(header_sum $DISK)
expect_fail "import of a version 9 token" \
	with_plugin cryptsetup token import --token-id 5 --json-file "$WORK/bad-version.json" $DISK
check "the plugin said why" grep -q 'version 9 is not supported' "$WORK/err"
expect_fail "import of a token without its ciphertext" \
	with_plugin cryptsetup token import --token-id 5 --json-file "$WORK/bad-ciphertext.json" $DISK
check "the plugin said why" grep -q 'lacks "ciphertext"' "$WORK/err"
check "the header is unchanged" test "$(header_sum $DISK)" = "$BEFORE"
check "control: without the plugin, libcryptsetup takes the same token" \
	cryptsetup token import --token-id 5 --json-file "$WORK/bad-version.json" $DISK
check "(removed again)" cryptsetup token remove --token-id 5 $DISK

step "revoked key: cryptsetup fails with the plugin's message, the token loop stops"
kms_as customer DisableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
run_timed "${WITH_PLUGIN[@]}" cryptsetup open --token-only $DISK stock
cat "$WORK/err"
check "cryptsetup failed (exit $RC)" test "$RC" -ne 0 -a "$RC" -lt 124
check "the message names the key" grep -qF "customer key $KEY is revoked or unusable" "$WORK/err"
check "and the KMS's reason" grep -q 'DisabledException' "$WORK/err"
check "no mapping was made" no_mapping stock
run_timed "${WITH_PLUGIN[@]}" "$TOKEN_OPEN" $DISK stock
check "libcryptsetup's caller gets -EKEYREVOKED, not a 'try something else' errno" \
	grep -qx 'result -128 EKEYREVOKED' "$WORK/out"
kms_as customer EnableKey "{\"KeyId\":\"$KEY\"}" >/dev/null

step "a KMS that accepts and never answers: cryptsetup fails within the plugin's own bound"
curl -sS -X POST "$KMS_URL/_emulator/faults" \
	-d '{"operation":"Decrypt","fault":"timeout","latency_ms":60000,"count":-1}' >/dev/null
export DMBYOK_TOKEN_TIMEOUT=2 DMBYOK_TOKEN_ATTEMPTS=2
run_timed "${WITH_PLUGIN[@]}" cryptsetup open --token-only $DISK stock
cat "$WORK/err"
check "cryptsetup failed (exit $RC) after ${SECS}s, bound 2 attempts x 2 s" test "$RC" -ne 0 -a "$RC" -lt 124
check "the message says the KMS is unreachable" grep -q 'KMS is unreachable or failing' "$WORK/err"
check "no mapping was made" no_mapping stock
unset DMBYOK_TOKEN_TIMEOUT DMBYOK_TOKEN_ATTEMPTS
curl -sS -X DELETE "$KMS_URL/_emulator/faults" >/dev/null

step "KMS down (nothing listening): libcryptsetup's caller gets -EAGAIN at once"
stop_kms
run_timed "${WITH_PLUGIN[@]}" "$TOKEN_OPEN" $DISK stock
cat "$WORK/err"
check "crypt_activate_by_token returned -EAGAIN (other tokens, a passphrase may follow) after ${SECS}s" \
	grep -qx 'result -11 EAGAIN' "$WORK/out"
check "the message says the KMS is unreachable" grep -q 'KMS is unreachable or failing' "$WORK/err"
check "no mapping was made" no_mapping stock
rm -f "$WORK/dek"
finish
