#!/usr/bin/env bash
# Runs inside the VM (bench/run plugin). Prints figures; asserts nothing about speed.
# Opening one dmbyok volume, whole commands, KMS round trip included, same VM, interleaved:
#   dmbyok open                       KMS Decrypt, key check value, table through the keyring
#   cryptsetup open --token-only      the plugin's KMS Decrypt and key check, then
#                                     libcryptsetup's keyslot (PBKDF2 + AF merge) and LUKS2
#                                     digest (PBKDF2), then the table
# and, to split the plugin path's cost, the same keyslot without any KMS call:
#   cryptsetup open --key-file DEK            keyslot + digest + table
#   cryptsetup open --test-passphrase ...     keyslot + digest only
#   cryptsetup luksDump                       header load (and process start) only
# CPU is user+sys of the command and its children (the KMS emulator is another process).
# Usage: plugin.sh DEVICE   (BENCH_PLUGIN_ROUNDS, default 20)
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
DEV=${1:?usage: plugin.sh DEVICE}
N=${BENCH_PLUGIN_ROUNDS:-20}
SYSTEM_PLUGINS=/usr/lib/x86_64-linux-gnu/cryptsetup

start_kms
create_key alias/bench-plugin >/dev/null
$DMBYOK format "$DEV" --key alias/bench-plugin --quiet >/dev/null 2>&1 || fail "format $DEV"
unwrap_dek_to "$DEV" "$WORK/dek"

# measure NAME CMD...: one run of CMD; appends "wall cpu" (seconds) to $WORK/NAME.
measure() {
	local name=$1 t0 t1 cpu
	shift
	t0=$(date +%s.%N)
	cpu=$( (
		"$@" >/dev/null 2>&1 || echo "bench: $* failed" >&2
		times
	) | tail -n 1 | awk '{ split($1, u, "m"); split($2, s, "m");
		printf "%.6f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
	t1=$(date +%s.%N)
	echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }') $cpu" >>"$WORK/$name"
}
avg() { awk '{ w += $1; c += $2; n++ } END { printf "%7.1f ms wall %7.1f ms CPU", 1000 * w / n, 1000 * c / n }' "$WORK/$1"; }
col() { awk -v k="$2" '{ s += $k; n++ } END { printf "%.6f", s / n }' "$WORK/$1"; }
rm -f "$WORK"/m-*

step "without the plugin visible: the keyslot path alone, $N rounds each"
for _ in $(seq "$N"); do
	measure m-keyfile cryptsetup open --key-file "$WORK/dek" "$DEV" b
	cryptsetup close b
	measure m-testpass cryptsetup open --test-passphrase --key-file "$WORK/dek" "$DEV"
	measure m-dump cryptsetup luksDump "$DEV"
done

step "with the plugin installed: dmbyok open vs cryptsetup open --token-only, $N rounds each"
# The VM's root is read-only: bind a directory with the system's plugins and ours over it.
mkdir -p "$WORK/plugins"
cp -a "$SYSTEM_PLUGINS"/. "$WORK/plugins/" 2>/dev/null || true
cp "$DMBYOK_BUILD_DIR/src/plugin/libcryptsetup-token-dmbyok.so" "$WORK/plugins/"
mount --bind "$WORK/plugins" "$SYSTEM_PLUGINS"
for _ in $(seq "$N"); do
	measure m-dmbyok $DMBYOK open "$DEV" b --quiet
	$DMBYOK close b --quiet
	measure m-plugin cryptsetup open --token-only "$DEV" b
	cryptsetup close b
done
umount "$SYSTEM_PLUGINS"

echo "  dmbyok open                          $(avg m-dmbyok)"
echo "  cryptsetup open --token-only         $(avg m-plugin)"
echo "  ratio plugin/dmbyok: $(awk -v a="$(col m-plugin 1)" -v b="$(col m-dmbyok 1)" 'BEGIN{printf "%.2f", a/b}')x wall," \
	"$(awk -v a="$(col m-plugin 2)" -v b="$(col m-dmbyok 2)" 'BEGIN{printf "%.2f", a/b}')x CPU"
echo "  cryptsetup open --key-file DEK       $(avg m-keyfile)   (no KMS)"
echo "  cryptsetup open --test-passphrase    $(avg m-testpass)   (keyslot + digest, no table)"
echo "  cryptsetup luksDump                  $(avg m-dump)   (header load, process start)"
ITER=$(cryptsetup luksDump "$DEV" | awk '/^Keyslots:/ { s = 1 } /^Digests:/ { s = 0; d = 1 }
	s && /Iterations:/ && !ks { ks = $2 } d && /Iterations:/ && !dg { dg = $2 }
	END { printf "keyslot PBKDF2 %s iterations, digest PBKDF2 %s iterations", ks, dg }')
echo "  the plugin path's extra: $ITER;"
echo "    keyslot + digest ~ test-passphrase - luksDump = $(awk -v a="$(col m-testpass 2)" -v b="$(col m-dump 2)" 'BEGIN{printf "%.1f", 1000 * (a - b)}') ms CPU," \
	"$(awk -v a="$(col m-testpass 1)" -v b="$(col m-dump 1)" 'BEGIN{printf "%.1f", 1000 * (a - b)}') ms wall per open"
echo "    plugin path - dmbyok path = $(awk -v a="$(col m-plugin 2)" -v b="$(col m-dmbyok 2)" 'BEGIN{printf "%.1f", 1000 * (a - b)}') ms CPU," \
	"$(awk -v a="$(col m-plugin 1)" -v b="$(col m-dmbyok 1)" 'BEGIN{printf "%.1f", 1000 * (a - b)}') ms wall per open"
rm -f "$WORK/dek" "$WORK"/m-*
stop_kms
