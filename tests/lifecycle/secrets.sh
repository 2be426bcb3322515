#!/usr/bin/env bash
# The DEK is not left in dmbyok's memory after open, nor on disk, in the runtime records,
# a keyring or the table; core dumps are off. The scanner is proven on a positive control.
# secrets.sh [PROVIDER]: aws (default), gcp or azure, through its KMS adapter (lib.sh).
. "$(dirname "$0")/lib.sh"
use_kms "${1:-aws}"
DISK=/dev/vda
MEMSCAN=$DMBYOK_BUILD_DIR/tests/lifecycle/memscan
HOLD=$DMBYOK_BUILD_DIR/tests/lifecycle/hold-open

step "a volume and its DEK (unwrapped by the test as the oracle)"
kms_start tls # the agent's case: TLS, one long-lived process, many KMS calls
KEY=$(kms_new_key secrets)
check "format" $DMBYOK format $DISK --key "$KEY"
kms_oracle_unwrap $DISK "$WORK/dek"


step "positive control: the scanner finds a key a process holds"
tail -c 64 -f "$WORK/dek" >/dev/null &
CONTROL=$!
check "the control process has read the key" wait_quietly 60 has_read $CONTROL "$WORK/dek"
expect_exit 1 "memscan finds the DEK in a process that read it" $MEMSCAN "$WORK/dek" --pid $CONTROL
kill $CONTROL

step "the scanner also finds the key's base64 and hex forms"
(KEYB64=$(base64 -w0 "$WORK/dek"); exec -a "holder-$KEYB64" sleep 300) &
CONTROL=$!
check "the control process holds the base64 form (argv)" wait_quietly 60 runs_as $CONTROL sleep
expect_exit 1 "memscan finds the base64 form" $MEMSCAN "$WORK/dek" --pid $CONTROL
kill $CONTROL
(KEYHEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n'); exec -a "holder-$KEYHEX" sleep 300) &
CONTROL=$!
check "the control process holds the hex form (argv)" wait_quietly 60 runs_as $CONTROL sleep
expect_exit 1 "memscan finds the hex form" $MEMSCAN "$WORK/dek" --pid $CONTROL
kill $CONTROL

step "open through the library, lock and unlock it 20 times over TLS, stay alive; scan"
calls=$(kms_unwrap_calls) t0=$(usecs)
coproc HOLDER { exec "$HOLD" $DISK data 20 2>"$WORK/hold.err"; }
read -r -t 120 line <&"${HOLDER[0]}" || fail "hold-open did not report"
[ "$line" = opened ] || fail "hold-open said: $line $(cat "$WORK/hold.err")"
ok "the volume is open and the opener is still running (pid $HOLDER_PID)"
d=$(($(usecs) - t0))
echo "TIMING: open + 20 lock/unlock cycles ($PROVIDER) took $((d / 1000)) ms, $((d / 21000)) ms per unwrap and table load"
check "the opener's 21 unwraps went to the token's provider ($PROVIDER: $KMS_UNWRAP_OP)" \
	test "$(($(kms_unwrap_calls) - calls))" -eq 21
expect_exit 0 "no copy of the DEK (either half, base64, hex) in the opener's memory after 21 unwraps" $MEMSCAN "$WORK/dek" --pid $HOLDER_PID
check "core dumps are disabled for the opener" \
	bash -c "grep -E '^Max core file size +0 +0 ' /proc/$HOLDER_PID/limits"
exec {HOLDER[1]}>&-
wait $HOLDER_PID || true

step "nowhere else"
check "no dmbyok key in any keyring" bash -c "! grep -q 'dmbyok:' /proc/keys"
KEYHEX=$(od -An -tx1 "$WORK/dek" | tr -d ' \n')
check "not in the table, even with --showkeys" bash -c "! dmsetup table --showkeys data | grep -qi $KEYHEX"
expect_exit 0 "not on the raw disk" $MEMSCAN "$WORK/dek" --file $DISK
for f in "$DMBYOK_RUNTIME_DIR"/mappings/*; do
	expect_exit 0 "not in the runtime record $(basename "$f")" $MEMSCAN "$WORK/dek" --file "$f"
done
check "the runtime record holds no key material" bash -c "! grep -qi '$KEYHEX' $DMBYOK_RUNTIME_DIR/mappings/*"
check "close" $DMBYOK close data
rm -f "$WORK/dek"
kms_stop
finish
