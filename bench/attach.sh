#!/usr/bin/env bash
# Boot attach of many volumes (bench/run attach; runs in the test VM): wall time from
# dmbyokd's start to every volume of /etc/dmbyok/volumes attached (its own log line), with
# the KMS emulator answering each Decrypt after BENCH_ATTACH_LATENCY_MS (50), against two
# serial baselines on the same volumes in the same VM: a loop of `dmbyok open` (one KMS
# round trip each) and a loop of `cryptsetup open --volume-key-file` with the DEKs already
# unwrapped (table loads only: the floor). Goal: the agent pays at most ~3 round trips
# plus the table loads, however many volumes.
# Usage: attach.sh DISK   (a blank disk of at least N x 32 MiB, cut into dm-linear slices)
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
DISK=${1:?usage: attach.sh DISK}
N=${BENCH_ATTACH_VOLUMES:-64}
LAT=${BENCH_ATTACH_LATENCY_MS:-50}
CTL=$DMBYOK_SOURCE_DIR/tests/kms-emulator/emulatorctl
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

step "setup: $N volumes of 32 MiB (dm-linear slices of $DISK), one key"
start_kms
create_key alias/boot >/dev/null
spec=""
for i in $(seq 0 $((N - 1))); do
	spec+="${spec:+;}as$i,,,rw,0 65536 linear $DISK $((i * 65536))"
done
dmsetup create --concise "$spec"
seq 0 $((N - 1)) | xargs -P 4 -I{} "$DMBYOK" format /dev/mapper/as{} --key alias/boot --quiet
VOLUMES=$WORK/volumes
for i in $(seq 0 $((N - 1))); do echo "av$i /dev/mapper/as$i -"; done >"$VOLUMES"
export DMBYOK_VOLUMES=$VOLUMES
mkdir -p "$WORK/keys"
for i in $(seq 0 $((N - 1))); do unwrap_dek_to "/dev/mapper/as$i" "$WORK/keys/$i"; done
close_all() { for i in $(seq 0 $((N - 1))); do $DMBYOK close "av$i" --quiet 2>/dev/null || cryptsetup close "av$i" 2>/dev/null || true; done; }
"$CTL" --url "$KMS_URL" fault Decrypt latency --count -1 --latency-ms "$LAT" >/dev/null

step "dmbyokd: start -> all $N attached"
runs=${BENCH_ATTACH_RUNS:-3}
for r in $(seq "$runs"); do
	close_all
	log=$WORK/attach-agent-$r.log
	t0=$EPOCHREALTIME
	"$DMBYOKD" --volumes "$VOLUMES" --check-interval 3600 --debug >"$log" 2>&1 &
	AGENT=$!
	wait_quietly 300 grep -q "Attached $N of $N volume" "$log" || { tail -20 "$log"; fail "not all attached"; }
	t=$(secs "$t0" "$EPOCHREALTIME")
	unwrap=$(sed -n 's/.*Unwrapped \([0-9]*\) data key(s) with \([0-9]*\) thread(s) in \([0-9.]*\) s.*/\3/p' "$log" | tail -1)
	inner=$(sed -n "s/.*Attached $N of $N volume(s) in \([0-9.]*\) s.*/\1/p" "$log" | tail -1)
	echo "  run $r: ${t}s from exec to all attached (attach pass ${inner}s, of it KMS unwraps ${unwrap}s)"
	AGENT_T+=("$t") AGENT_U+=("$unwrap") AGENT_I+=("$inner")
	kill "$AGENT"; wait "$AGENT" 2>/dev/null || true
done

step "baseline: serial dmbyok open"
close_all
t0=$EPOCHREALTIME
for i in $(seq 0 $((N - 1))); do $DMBYOK open "/dev/mapper/as$i" "av$i" --quiet; done
SERIAL=$(secs "$t0" "$EPOCHREALTIME")
echo "  ${SERIAL}s"

step "floor: serial cryptsetup open with the unwrapped keys (no KMS)"
close_all
t0=$EPOCHREALTIME
for i in $(seq 0 $((N - 1))); do
	cryptsetup open --volume-key-file "$WORK/keys/$i" "/dev/mapper/as$i" "av$i"
done
FLOOR=$(secs "$t0" "$EPOCHREALTIME")
echo "  ${FLOOR}s"
close_all
stop_kms

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
A=$(median "${AGENT_T[@]}") U=$(median "${AGENT_U[@]}") I=$(median "${AGENT_I[@]}")
rtt=$(awk -v l="$LAT" 'BEGIN { printf "%.3f", l / 1000 }')
step "results ($N volumes, KMS latency ${LAT} ms, median of $runs agent runs)"
printf '  dmbyokd exec -> all attached      %8.3f s  (%.2fx the serial dmbyok open loop)\n' "$A" "$(awk -v a="$A" -v b="$SERIAL" 'BEGIN { print a / b }')"
printf '    of it the attach pass           %8.3f s\n' "$I"
printf '    of it the KMS unwraps           %8.3f s  = %.1f KMS latencies (goal: <= 3)\n' "$U" "$(awk -v u="$U" -v r="$rtt" 'BEGIN { print u / r }')"
printf '  serial dmbyok open x %-3d          %8.3f s  (%.3f s each)\n' "$N" "$SERIAL" "$(awk -v s="$SERIAL" -v n="$N" 'BEGIN { print s / n }')"
printf '  serial cryptsetup open (floor)    %8.3f s  (table loads only, no KMS)\n' "$FLOOR"
printf '  attach pass over the floor        %8.2fx\n' "$(awk -v a="$I" -v b="$FLOOR" 'BEGIN { print a / b }')"
