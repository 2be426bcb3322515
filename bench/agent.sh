#!/usr/bin/env bash
# dmbyokd's figures on real dm-crypt; runs inside the test VM (bench/run agent). Prints
# figures, asserts nothing about speed:
#   1. revocation -> key gone from the kernel, restore -> I/O flowing again
#      (--check-interval 2 and 10, --restore-interval 2, 2 revoke confirmations)
#   2. KMS calls per minute with 1, 8 and 64 volumes under 1 and 4 keys
#   3. the agent's footprint: RSS, CPU per probe, wake-ups when idle between probes
# Usage: agent.sh DISK   (a blank disk of at least 2.7 GiB, cut into dm-linear slices)
# Environment (bench/run passes BENCH_* through):
#   BENCH_AGENT_CYCLES       revocation cycles at interval 2 (20)
#   BENCH_AGENT_CYCLES_SLOW  revocation cycles at interval 10 (20; fewer when the budget ends)
#   BENCH_AGENT_WINDOW       seconds per KMS-calls window, at interval 2 (60)
#   BENCH_AGENT_IDLE_WINDOW  seconds per footprint window, at interval 10 (60)
#   BENCH_AGENT_BUDGET       seconds for this whole script (1420): the interval-10 cycles,
#                            which come last, stop early rather than exceed it, and say so
#   BENCH_AGENT_VOLUMES      the largest volume count (64)
#   BENCH_AGENT_ONLY         all | kms (sections 2 and 3) | revocation (section 1)
#   BENCH_AGENT_DEBUG        set: the cycles' time stamps, the agents' logs, KMS calls
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
DISK=${1:?usage: agent.sh DISK}
HELPER=(python3 "$DMBYOK_SOURCE_DIR/bench/agent-helper.py")
CYCLES=${BENCH_AGENT_CYCLES:-20}
CYCLES_SLOW=${BENCH_AGENT_CYCLES_SLOW:-20}
WINDOW=${BENCH_AGENT_WINDOW:-60}
IDLE_WINDOW=${BENCH_AGENT_IDLE_WINDOW:-60}
BUDGET=${BENCH_AGENT_BUDGET:-1420}
M=${BENCH_AGENT_VOLUMES:-64}
ONLY=${BENCH_AGENT_ONLY:-all}
DEBUG=${BENCH_AGENT_DEBUG:-}
RESTORE=2 CONFIRM=2
REV=brev # the revocation volume's mapping, on slice bsrev
MNT=$WORK/mnt
mkdir -p "$MNT"
rm -f "$WORK"/agent-*.log "$WORK"/metrics-*.prom
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

AGENT="" WRITER_PID="" TABLEWATCH=""
cleanup() {
	local p
	for p in $AGENT $WRITER_PID $TABLEWATCH; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# A sleep without starting a program (starting one in the guest costs up to ~0.2 s).
exec {NAPFD}<> <(:)
nap() { read -rt "$1" -u "$NAPFD" _ || true; }
nap_rand() { # nap_rand MIN_MS MAX_MS: a uniformly random pause
	local ms=$(($1 + RANDOM * ($2 - $1) / 32767))
	nap "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
}
# usec T: US = a $EPOCHREALTIME-style time stamp (6 decimals) in integer microseconds.
usec() { US=$((${1%.*} * 1000000 + 10#${1#*.})); }
# dsecs A B: D = B - A, both time stamps as above, in seconds with 3 decimals.
dsecs() {
	local a
	usec "$1"
	a=$US
	usec "$2"
	a=$(((US - a + 500) / 1000))
	D=$((a / 1000)).$(printf '%03d' $((a % 1000)))
}
since() { dsecs "$1" "$EPOCHREALTIME"; echo "$D"; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
stats() { "${HELPER[@]}" stats <"$1"; } # FILE -> "n min median p90 max mean"
f() { echo "$2" | cut -d' ' -f"$1"; }   # f N "n min median p90 max mean"

# agent_up LOG OPTIONS...: dmbyokd in the background, once it has adopted what exists.
agent_up() {
	local log=$1
	shift
	# Each line time-stamped (CLOCK_REALTIME), to line the log up with the measurements; by
	# a process of ours, through a FIFO (a process substitution would be dmbyokd's child).
	rm -f "$log.fifo"
	mkfifo "$log.fifo"
	(while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done <"$log.fifo" >>"$log") &
	"$DMBYOKD" "$@" >"$log.fifo" 2>&1 &
	AGENT=$!
	for _ in $(seq 600); do
		grep -q 'Watching [0-9]* key(s)' "$log" && return 0
		kill -0 "$AGENT" 2>/dev/null || { cat "$log" >&2; fail "dmbyokd died"; }
		nap 0.1
	done
	cat "$log" >&2
	fail "dmbyokd never said it was watching"
}
agent_down() {
	kill "$AGENT" 2>/dev/null || true
	wait "$AGENT" 2>/dev/null || true
	AGENT=""
}

declare -A R
SETUP_FORMAT=- OPEN_S=0 OPEN_N=0 CLOSE_S=0 CLOSE_N=0

# ---------------------------------------------------------------------------------------
step "setup: KMS emulator, 5 keys, dm-linear slices of $DISK"
echo "  (QEMU TCG guest, no KVM: CPU-bound figures are several times a real host's, and guest"
echo "  CPU time includes what the host's load takes from QEMU; compare within one run)"
start_kms
create_key alias/rev >/dev/null
for k in 0 1 2 3; do create_key alias/k$k >/dev/null; done
# Slices: bsrev 512 MiB; bs0..bs(M-1) and bsx1..bsx3 32 MiB each (16 MiB of it LUKS2
# header). Their mappings: brev, bv0..bv(M-1), bx1..bx3.
S_REV=$((512 * 2048)) S_VOL=$((32 * 2048))
spec="bsrev,,,rw,0 $S_REV linear $DISK 0"
for i in $(seq 0 $((M + 2))); do
	name=bs$i
	[ "$i" -lt "$M" ] || name=bsx$((i - M + 1))
	spec+=";$name,,,rw,0 $S_VOL linear $DISK $((S_REV + i * S_VOL))"
done
dmsetup create --concise "$spec"
$DMBYOK format /dev/mapper/bsrev --key alias/rev --quiet >/dev/null
if want kms; then
	ts=$EPOCHREALTIME
	{
		for i in $(seq 0 $((M - 1))); do echo "bs$i alias/k0"; done
		for k in 1 2 3; do echo "bsx$k alias/k$k"; done
	} | xargs -P 4 -n 2 sh -c 'exec "$0" format "/dev/mapper/$1" --key "$2" --quiet >/dev/null' "$DMBYOK"
	SETUP_FORMAT=$(since "$ts")
	echo "  formatted $((M + 3)) volumes of 32 MiB (4 at a time) in ${SETUP_FORMAT}s:"
	echo "  bs0..bs$((M - 1)) under alias/k0, bsx1..bsx3 under alias/k1..k3"
fi

OPEN=0 # volumes bv0..bv$((OPEN-1)) are open
set_open() { # set_open N: exactly bv0..bv(N-1) open
	local ts=$EPOCHREALTIME
	if [ "$1" -gt "$OPEN" ]; then
		seq "$OPEN" $(($1 - 1)) | xargs -P 4 -I{} "$DMBYOK" open /dev/mapper/bs{} bv{} --quiet
		OPEN_N=$((OPEN_N + $1 - OPEN))
		OPEN_S=$(calc %.1f "$OPEN_S + $(since "$ts")")
	elif [ "$1" -lt "$OPEN" ]; then
		seq "$1" $((OPEN - 1)) | xargs -P 4 -I{} "$DMBYOK" close bv{} --quiet
		CLOSE_N=$((CLOSE_N + OPEN - $1))
		CLOSE_S=$(calc %.1f "$CLOSE_S + $(since "$ts")")
	fi
	OPEN=$1
}

# window LABEL VOLUMES KEYS INTERVAL SECONDS: an agent over what is open (nothing else),
# sampled by agent-helper.py; the results go to R[LABEL,...].
window() {
	local label=$1 nv=$2 nk=$3 iv=$4 secs=$5 log="$WORK/agent-$1.log" watched keys k v
	agent_up "$log" --check-interval "$iv" --restore-interval $RESTORE
	read -r watched keys < <($DMBYOK list --json |
		jq -r '[.[] | select(.agent.watched == true)] | "\(length) \([.[].key_arn] | unique | length)"')
	if [ "$watched" -ne "$nv" ] || [ "$keys" -ne "$nk" ]; then
		fail "the agent watches $watched volumes under $keys keys, not $nv under $nk"
	fi
	nap 2 # past the start-up probes
	while IFS='=' read -r k v; do
		R[$label,$k]=$v
	done < <("${HELPER[@]}" window "$AGENT" "$secs" "$WORK/audit.log")
	R[$label,volumes]=$nv R[$label,keys]=$nk R[$label,interval]=$iv R[$label,secs]=$secs
	agent_down
	printf '  %-6s %2d vol, %d key, I=%2ds, %ss: %5s KMS calls/min (%s Decrypt + %s DescribeKey);' \
		"$label" "$nv" "$nk" "$iv" "$secs" "${R[$label,calls_per_min]}" "${R[$label,decrypt_per_min]}" \
		"${R[$label,describe_per_min]}"
	printf ' %s probes, %s ms CPU each; %s ctx switches/min\n' \
		"${R[$label,probes]}" "${R[$label,cpu_per_probe_ms]}" "${R[$label,ctx_per_min]}"
}

if want kms; then
	# A baseline for CPU per probe, before and after the windows (TCG: the host's load moves
	# guest CPU figures): the CPU of a process that makes one signed KMS Decrypt.
	tok=$(token_json /dev/mapper/bs0)
	BASE_BODY="{\"CiphertextBlob\":\"$(echo "$tok" | json_get ciphertext)\",\"EncryptionContext\":$(echo "$tok" | json_get context)}"
	BASE_N=4
	baseline() {
		(
			for _ in $(seq $BASE_N); do kms_as host Decrypt "$BASE_BODY" >/dev/null; done
			times
		) | tail -n 1 | awk -v n=$BASE_N '{ split($1, u, "m"); split($2, s, "m");
			printf "%.1f", 1000 * (u[1] * 60 + u[2] + s[1] * 60 + s[2]) / n }'
	}
	step "baseline: CPU of a curl process making one signed KMS Decrypt (as kms_as host)"
	BASE_MS1=$(baseline)
	echo "  ${BASE_MS1} ms CPU each (process start included; $BASE_N rounds)"

	step "KMS calls and footprint, 1 key: 1, 8, $M volumes (I=2: ${WINDOW}s; I=10: ${IDLE_WINDOW}s)"
	set_open 1
	window k1v1 1 1 2 "$WINDOW"
	window f1 1 1 10 "$IDLE_WINDOW"
	set_open 8
	window k1v8 8 1 2 "$WINDOW"
	window f8 8 1 10 "$IDLE_WINDOW"
	set_open "$M"
	window "k1v$M" "$M" 1 2 "$WINDOW"
	window "f$M" "$M" 1 10 "$IDLE_WINDOW"

	step "KMS calls, 4 keys: $M and 8 volumes (bx1..bx3 under keys 1-3, the rest under key 0)"
	set_open $((M - 3))
	ts=$EPOCHREALTIME
	printf '%s\n' 1 2 3 | xargs -P 3 -I{} "$DMBYOK" open /dev/mapper/bsx{} bx{} --quiet
	OPEN_N=$((OPEN_N + 3)) OPEN_S=$(calc %.1f "$OPEN_S + $(since "$ts")")
	window "k4v$M" "$M" 4 2 "$WINDOW"
	set_open 5
	window k4v8 8 4 2 "$WINDOW"
	set_open 0
	for k in 1 2 3; do $DMBYOK close bx$k --quiet; done
	step "baseline again"
	BASE_MS2=$(baseline)
	BASE_MS=$(calc %.1f "($BASE_MS1 + $BASE_MS2) / 2")
	echo "  ${BASE_MS2} ms CPU each (before the windows: ${BASE_MS1} ms; the figures use the mean,"
	echo "  ${BASE_MS} ms)"
fi

# ---------------------------------------------------------------------------------------
# wait_event AFTER_US SECONDS WORD...: the first line of the table watcher's log with one of
# the WORDs, time-stamped after AFTER_US; prints its time stamp.
wait_event() {
	local after=$1 deadline=$((SECONDS + $2)) w t
	shift 2
	while [ $SECONDS -lt $deadline ]; do
		while read -r w t; do
			case " $* " in *" $w "*)
				usec "$t"
				[ "$US" -gt "$after" ] && { echo "$t"; return 0; } ;;
			esac
		done <"$WORK/table.log"
		nap 0.02
	done
	return 1
}
# wait_ack AFTER_US SECONDS: the first write acknowledged after a stall, after AFTER_US.
wait_ack() {
	local deadline=$((SECONDS + $2)) a b s
	while [ $SECONDS -lt $deadline ]; do
		while read -r a b s; do
			[ "$a" = ready ] && continue
			usec "$b"
			[ "$US" -gt "$1" ] && { echo "$b"; return 0; }
		done <"$WORK/writer.gaps"
		nap 0.02
	done
	return 1
}
# agent_key_active: the agent's key is active and its volume unlocked.
agent_key_active() {
	[ "$($DMBYOK status $REV --json 2>/dev/null |
		jq -r '.agent.key_state + "/" + .agent.state + "/" + .state')" = active/active/active ]
}
# Means and counts of the agent's own timings, from its metrics file (histograms).
mean_of() { # FILE NAME [LABEL]
	awk -v m="$2" -v l="${3:-}" 'index($1, m "_sum") == 1 && index($1, l) { s += $2 }
		index($1, m "_count") == 1 && index($1, l) { c += $2 }
		END { if (c) printf "%.3f", s / c; else print "0" }' "$1"
}
count_of() { # FILE NAME [LABEL]
	awk -v m="$2" -v l="${3:-}" 'index($1, m "_count") == 1 && index($1, l) { c += $2 }
		END { print c + 0 }' "$1"
}

# cycles INTERVAL N: N revocations and restores under an agent at that interval. Times
# run from the emulator's receipt of the customer's call (its audit log), which is when
# the key's state changes; the customer's curl returns some 0.1-0.5 s later.
cycles() {
	local iv=$1 n=$2 c done_n=0 tpre tr td tg te ta dg da log="$WORK/agent-rev$1.log"
	: >"$WORK/rev-$iv"
	: >"$WORK/res-$iv"
	: >"$WORK/call-$iv"
	agent_up "$log" --check-interval "$iv" --restore-interval $RESTORE \
		--metrics-file "$WORK/metrics-$iv.prom"
	for _ in $(seq 60); do agent_key_active && break; nap 0.5; done
	agent_key_active || { cat "$log"; fail "the agent does not watch $REV"; }
	for c in $(seq "$n"); do
		if [ "$iv" -ge 10 ] && [ $((SECONDS + 2 * iv + 10)) -gt "$BUDGET" ]; then
			echo "  the time budget (${BUDGET}s for this script) ends: $done_n of $n cycles measured"
			break
		fi
		# The writer going on proved the last unlock done: the key is active for the agent.
		nap_rand 0 $((iv * 1000)) # a uniformly random phase against the probe schedule
		usec "$EPOCHREALTIME"
		tpre=$((US - 10000)) # the audit log has milliseconds
		kms_as customer DisableKey "{\"KeyId\":\"$KEY_REV\"}" >/dev/null
		tr=$EPOCHREALTIME
		td=$(wait_event "$tpre" 30 DisableKey) || fail "cycle $c: DisableKey not in the audit log"
		usec "$td"
		tg=$(wait_event "$US" $((3 * iv + 60)) unkeyed absent) ||
			{ tail -n 30 "$log"; fail "cycle $c: the key never left the table"; }
		dsecs "$td" "$tr"
		echo "$D" >>"$WORK/call-$iv"
		nap_rand 0 $((RESTORE * 1000)) # the same against the restore probes
		usec "$EPOCHREALTIME"
		tpre=$((US - 10000))
		kms_as customer EnableKey "{\"KeyId\":\"$KEY_REV\"}" >/dev/null
		te=$(wait_event "$tpre" 30 EnableKey) || fail "cycle $c: EnableKey not in the audit log"
		usec "$te"
		ta=$(wait_ack "$US" $((3 * RESTORE + 60))) ||
			{ tail -n 30 "$log"; fail "cycle $c: the writer never went on"; }
		dsecs "$td" "$tg"
		dg=$D
		dsecs "$te" "$ta"
		da=$D
		echo "$dg" >>"$WORK/rev-$iv"
		echo "$da" >>"$WORK/res-$iv"
		done_n=$((done_n + 1))
		[ -z "$DEBUG" ] || echo "    debug: disable $td gone $tg enable $te acked $ta now $EPOCHREALTIME"
		printf '    cycle %2d: key gone %6ss after DisableKey; a write acknowledged %6ss after EnableKey\n' \
			"$c" "$dg" "$da"
	done
	for _ in $(seq 60); do agent_key_active && break; nap 0.5; done
	agent_down
	if [ -n "$DEBUG" ]; then
		echo "    debug: the agent's log"
		sed 's/^/      /' "$log"
		echo "    debug: its KMS calls (audit log)"
		jq -r 'select(.key_arn == "'"$KEY_REV"'") | "      \(.time) \(.operation) \(.result) \(.user_agent | split(" ")[0])"' "$WORK/audit.log" | tail -n 200
	fi
	R[rev$iv,done]=$done_n
	R[rev$iv,rev]=$(stats "$WORK/rev-$iv")
	R[rev$iv,res]=$(stats "$WORK/res-$iv")
	R[rev$iv,call]=$(stats "$WORK/call-$iv")
	R[rev$iv,p]=$(mean_of "$WORK/metrics-$iv.prom" dmbyok_probe_duration_seconds)
	R[rev$iv,L]=$(mean_of "$WORK/metrics-$iv.prom" dmbyok_lock_duration_seconds 'result="ok"')
	R[rev$iv,U]=$(mean_of "$WORK/metrics-$iv.prom" dmbyok_restore_duration_seconds 'result="ok"')
	R[rev$iv,locks]=$(count_of "$WORK/metrics-$iv.prom" dmbyok_lock_duration_seconds 'result="ok"')
	R[rev$iv,unlocks]=$(count_of "$WORK/metrics-$iv.prom" dmbyok_restore_duration_seconds 'result="ok"')
}

if want revocation; then
	step "revocation and restore: one volume, mounted, a writer appending a record + fsync every 10 ms"
	$DMBYOK open /dev/mapper/bsrev $REV --quiet
	mkfs.ext4 -q /dev/mapper/$REV
	mount /dev/mapper/$REV "$MNT"
	: >"$WORK/table.log"
	: >"$WORK/writer.gaps"
	"${HELPER[@]}" tablewatch $REV "$WORK/table.log" "$WORK/audit.log" 2>"$WORK/tablewatch.err" &
	TABLEWATCH=$!
	"${HELPER[@]}" writer "$MNT/log" "$WORK/writer.gaps" "$WORK/writer.acked" &
	WRITER_PID=$!
	for _ in $(seq 300); do
		grep -q '^keyed' "$WORK/table.log" && grep -q '^ready' "$WORK/writer.gaps" && break
		nap 0.1
	done
	grep -q '^keyed' "$WORK/table.log" || fail "the table watcher never saw the key reference"
	KEY_REV=$($DMBYOK status $REV --json | jq -r .key_arn)

	step "revocation cycles at --check-interval 2 ($CYCLES)"
	cycles 2 "$CYCLES"
	step "revocation cycles at --check-interval 10 (up to $CYCLES_SLOW)"
	cycles 10 "$CYCLES_SLOW"

	kill "$WRITER_PID" 2>/dev/null || true
	wait "$WRITER_PID" || true
	WRITER_PID=""
	kill "$TABLEWATCH" 2>/dev/null || true
	wait "$TABLEWATCH" 2>/dev/null || true
	TABLEWATCH=""
	ACKED=$(cat "$WORK/writer.acked")
	umount "$MNT"
	$DMBYOK close $REV --quiet
	# A sanity check, not a durability proof (tests/lifecycle/agent.sh is that).
	$DMBYOK open /dev/mapper/bsrev $REV --quiet
	mount -o ro /dev/mapper/$REV "$MNT"
	if head -n $((ACKED + 1)) "$MNT/log" | awk '$2 != sprintf("%08d", NR - 1) { exit 1 }' &&
		[ "$(wc -l <"$MNT/log")" -ge $((ACKED + 1)) ]; then
		SURVIVED="all $((ACKED + 1)) acknowledged records read back after close and reopen"
	else
		SURVIVED="acknowledged records MISSING: fewer than $((ACKED + 1)) in order"
	fi
	umount "$MNT"
	$DMBYOK close $REV --quiet
fi

# ---------------------------------------------------------------------------------------
step "results"
if want revocation; then
	echo "  1. revocation -> key gone from the kernel: from the KMS receiving the customer's"
	echo "     DisableKey (its audit log) to the first 20 ms poll (libdevmapper: the table dmsetup"
	echo "     shows) without ':logon:'. restore -> I/O flowing: from the KMS receiving EnableKey to"
	echo "     the first write the writer saw acknowledged (fsync returned). --restore-interval"
	echo "     $RESTORE, $CONFIRM confirmations. (The customer's DisableKey call returned a median"
	echo "     $(f 3 "${R[rev2,call]}")s / $(f 3 "${R[rev10,call]}")s after the KMS received it, I=2/10.)"
	printf '    %-36s %3s %8s %8s %8s %8s\n' "seconds" n min median p90 max
	for iv in 2 10; do
		for w in rev res; do
			s=${R[rev$iv,$w]}
			printf '    %-36s %3s %8s %8s %8s %8s\n' \
				"interval ${iv}s: $([ $w = rev ] && echo "revocation -> key gone" || echo "restore -> write acked")" \
				"$(f 1 "$s")" "$(f 2 "$s")" "$(f 3 "$s")" "$(f 4 "$s")" "$(f 5 "$s")"
		done
	done
	echo "    expected (mean probe p, lock action L, unlock action U: the agent's own metrics):"
	for iv in 2 10; do
		p=${R[rev$iv,p]} l=${R[rev$iv,L]} u=${R[rev$iv,U]}
		R[rev$iv,exp_rev]=$(calc %.2f "$iv / 2 + $CONFIRM * $p + $l")
		R[rev$iv,exp_res]=$(calc %.2f "$RESTORE / 2 + $p + $u")
		printf '      interval %2ds (p %ss, L %ss, U %ss; %s locks, %s unlocks):\n' \
			"$iv" "$p" "$l" "$u" "${R[rev$iv,locks]}" "${R[rev$iv,unlocks]}"
		printf '        key gone ~ next probe (0..I, mean I/2) + %d probes back to back + L\n' "$CONFIRM"
		printf '          ~ %s .. %s s, mean %s s   [%d x interval = %d s]   measured median/mean %s\n' \
			"$(calc %.2f "$CONFIRM * $p")" "$(calc %.2f "$iv + ($CONFIRM + 1) * $p + $l")" \
			"${R[rev$iv,exp_rev]}" "$CONFIRM" $((CONFIRM * iv)) \
			"$(calc %.2f "$(f 3 "${R[rev$iv,rev]}") / ${R[rev$iv,exp_rev]}")"
		printf '        write acked ~ next restore probe (0..R, mean R/2) + p + U\n'
		printf '          ~ %s .. %s s, mean %s s   measured median/mean %s\n' \
			"$(calc %.2f "$p + $u")" "$(calc %.2f "$RESTORE + 2 * $p + $u")" "${R[rev$iv,exp_res]}" \
			"$(calc %.2f "$(f 3 "${R[rev$iv,res]}") / ${R[rev$iv,exp_res]}")"
	done
	echo "      A SUSPECT key is re-probed at once (src/agent/keywatch.h), so confirmations add"
	echo "      probe latencies, not intervals. L ends after the lock's in-use check, a little"
	echo "      after the key left the table."
	if [ "${R[rev10,done]}" -lt "$CYCLES_SLOW" ]; then
		echo "    NOTE: ${R[rev10,done]} of $CYCLES_SLOW cycles at interval 10 (time budget ${BUDGET}s)"
	fi
	echo "    writer: $SURVIVED"
	echo
fi
if want kms; then
	echo "  2. KMS calls per minute made by the agent (emulator audit log, user agent dmbyok/*),"
	echo "     ${WINDOW}s windows, --check-interval 2"
	printf '    %-6s %7s %4s %9s %11s %12s %11s %8s %9s\n' "" volumes keys "calls/min" \
		"Decrypt/min" "Describe/min" "per key/min" "period" "vs fewest"
	for l in k1v1 k1v8 "k1v$M" - "k4v$M" k4v8; do
		if [ "$l" = - ]; then
			printf '    %-6s %7s %4s   (1 volume under 4 keys cannot be: a volume has one key)\n' "" 1 4
			continue
		fi
		nk=${R[$l,keys]}
		base=$([ "$nk" = 1 ] && echo k1v1 || echo k4v8)
		printf '    %-6s %7s %4s %9s %11s %12s %11s %7ss %8sx\n' "$l" "${R[$l,volumes]}" "$nk" \
			"${R[$l,calls_per_min]}" "${R[$l,decrypt_per_min]}" "${R[$l,describe_per_min]}" \
			"$(calc %.1f "${R[$l,calls_per_min]} / $nk")" "${R[$l,period_s]}" \
			"$(calc %.2f "${R[$l,calls_per_min]} / ${R[$base,calls_per_min]}")"
	done
	echo "    expected per key: one Decrypt per probe, a probe 2 s after the previous answer (period"
	echo "    = 2 s + probe latency: 60/period, under 30/min), plus a DescribeKey alias check every"
	echo "    6th probe (~5/min): ~35 calls per key per minute at most, whatever the volumes (a"
	echo "    window's edges can add one call)."
	echo "    4 keys: bx1..bx3 (one volume each under keys 1-3) + the rest under key 0; one probe per"
	echo "    key whatever the spread. vs fewest: over the same keys' fewest volumes (1 key: 1; 4: 8)."
	echo
	echo "  3. agent footprint (f*: --check-interval 10, ${IDLE_WINDOW}s; k*: interval 2, ${WINDOW}s)"
	printf '    %-6s %4s %3s %9s %9s %9s %5s %9s %9s %6s %9s %8s %8s %9s %8s %12s %8s\n' "" vols "I" \
		VmRSS VmHWM RssAnon kids "kids RSS" "Pss all" probes "CPU/probe" "of it own" \
		"ctx/min" "ctx/probe" "kids ctx" "idle ctx/min" "perf/min"
	for l in f1 f8 "f$M" k1v1 k1v8 "k1v$M" "k4v$M" k4v8; do
		idle=-
		[ "${R[$l,interval]}" = 10 ] &&
			idle="${R[$l,idle_ctx_per_min]} (${R[$l,idle_ctx]}+${R[$l,idle_kids_ctx]})"
		printf '    %-6s %4s %3s %7sKB %7sKB %7sKB %5s %7sKB %7sKB %6s %7sms %6sms %8s %9s %8s %12s %8s\n' \
			"$l" "${R[$l,volumes]}" "${R[$l,interval]}" "${R[$l,rss_kb]}" "${R[$l,hwm_kb]}" \
			"${R[$l,anon_kb]}" "${R[$l,kids]}" "${R[$l,kids_rss_kb]}" "${R[$l,pss_kb]}" \
			"${R[$l,probes]}" "${R[$l,cpu_per_probe_ms]}" "${R[$l,cpu_own_per_probe_ms]}" \
			"${R[$l,ctx_per_min]}" "${R[$l,ctx_per_probe]}" "${R[$l,kids_ctx_per_min]}" \
			"$idle" "${R[$l,perf_ctx_per_min]:--}"
	done
	echo "    VmRSS/VmHWM/RssAnon: dmbyokd itself. It mlockall()s (no secret may reach swap), so every"
	echo "    page it maps (shared libraries too) is resident: VmRSS ~ VmLck. kids: its live children"
	echo "    at the window's end (one prober per key, src/agent/prober.c), their summed VmRSS;"
	echo "    Pss all: dmbyokd + kids, shared pages counted once. CPU/probe = (utime+stime of"
	echo "    dmbyokd + cutime+cstime of its reaped children + the live children's CPU) / probes,"
	echo "    10 ms ticks; 'of it own': dmbyokd's part. Baseline: one curl process making one"
	echo "    signed Decrypt, ${BASE_MS} ms (${BASE_MS1} before the windows, ${BASE_MS2} after);"
	echo "    CPU/probe over it: k1v1 $(calc %.3f "${R[k1v1,cpu_per_probe_ms]} / $BASE_MS")x," \
		"k1v$M $(calc %.3f "${R[k1v$M,cpu_per_probe_ms]} / $BASE_MS")x," \
		"k4v$M $(calc %.3f "${R[k4v$M,cpu_per_probe_ms]} / $BASE_MS")x."
	echo "    ctx = dmbyokd's voluntary + nonvoluntary context switches (each wake-up is one); kids"
	echo "    ctx: its children's, per minute. idle ctx/min: dmbyokd's more than 1 s from any KMS call"
	echo "    of a probe, per minute of such time (counts in brackets: dmbyokd + children). The 60 s"
	echo "    rescan backstop, due 60 s after the start like a probe at I=10, usually falls next to"
	echo "    one and is not counted idle. perf/min: perf stat --no-inherit context-switches of"
	echo "    dmbyokd over the window (+1.5 s), a cross-check of ctx/min."
	echo "    $M volumes over 1 (I=10): VmRSS $(calc %.3f "${R[f$M,rss_kb]} / ${R[f1,rss_kb]}")x," \
		"RssAnon $(calc %.3f "${R[f$M,anon_kb]} / ${R[f1,anon_kb]}")x," \
		"Pss all $(calc %.3f "${R[f$M,pss_kb]} / ${R[f1,pss_kb]}")x;" \
		"CPU/probe $(calc %.2f "${R[k1v$M,cpu_per_probe_ms]} / ${R[k1v1,cpu_per_probe_ms]}")x (I=2)," \
		"$(calc %.2f "${R[f$M,cpu_per_probe_ms]} / ${R[f1,cpu_per_probe_ms]}")x (I=10)"
	echo
	echo "  setup (in no figure): $((M + 3)) formats ${SETUP_FORMAT}s, $OPEN_N opens ${OPEN_S}s,"
	echo "  $CLOSE_N closes ${CLOSE_S}s (4 CLI processes at a time)"
fi

echo
echo "==================== dmbyokd bench summary (QEMU TCG guest) ===================="
if want revocation; then
	for iv in 2 10; do
		for w in rev res; do
			s=${R[rev$iv,$w]}
			printf '%-33s n=%-2s min %6ss median %6ss p90 %6ss max %6ss (expected mean %ss)\n' \
				"$([ $w = rev ] && echo "revocation->key gone, I=${iv}s:" || echo "restore->write acked, I=${iv}s:")" \
				"$(f 1 "$s")" "$(f 2 "$s")" "$(f 3 "$s")" "$(f 4 "$s")" "$(f 5 "$s")" "${R[rev$iv,exp_$w]}"
		done
	done
	if [ "${R[rev10,done]}" -lt "$CYCLES_SLOW" ]; then
		echo "  (interval 10: ${R[rev10,done]} of $CYCLES_SLOW cycles, time budget)"
	fi
fi
if want kms; then
	printf 'KMS calls/min, 1 key:  1 vol %s, 8 vols %s, %d vols %s (%d/1: %sx); per key ~35 at most\n' \
		"${R[k1v1,calls_per_min]}" "${R[k1v8,calls_per_min]}" "$M" "${R[k1v$M,calls_per_min]}" "$M" \
		"$(calc %.2f "${R[k1v$M,calls_per_min]} / ${R[k1v1,calls_per_min]}")"
	printf 'KMS calls/min, 4 keys: 8 vols %s, %d vols %s (%d/8: %sx); per key %s / %s\n' \
		"${R[k4v8,calls_per_min]}" "$M" "${R[k4v$M,calls_per_min]}" "$M" \
		"$(calc %.2f "${R[k4v$M,calls_per_min]} / ${R[k4v8,calls_per_min]}")" \
		"$(calc %.1f "${R[k4v8,calls_per_min]} / 4")" "$(calc %.1f "${R[k4v$M,calls_per_min]} / 4")"
	printf 'dmbyokd VmRSS/VmHWM/RssAnon KB, I=10: 1 vol %s/%s/%s, 8 vols %s/%s/%s, %d vols %s/%s/%s\n' \
		"${R[f1,rss_kb]}" "${R[f1,hwm_kb]}" "${R[f1,anon_kb]}" "${R[f8,rss_kb]}" "${R[f8,hwm_kb]}" \
		"${R[f8,anon_kb]}" "$M" "${R[f$M,rss_kb]}" "${R[f$M,hwm_kb]}" "${R[f$M,anon_kb]}"
	printf 'with its probers (Pss, KB): 1 key %s (%s kids), 4 keys %s (%s kids); prober VmRSS %s KB each\n' \
		"${R[f1,pss_kb]}" "${R[f1,kids]}" "${R[k4v$M,pss_kb]}" "${R[k4v$M,kids]}" \
		"$(calc %.0f "${R[k4v$M,kids_rss_kb]} / (${R[k4v$M,kids]} > 0 ? ${R[k4v$M,kids]} : 1)")"
	printf 'CPU/probe (agent+children) ms: I=2 1/8/%d vols %s/%s/%s, 4 keys %s/%s; I=10 %s/%s/%s; curl Decrypt %s\n' \
		"$M" "${R[k1v1,cpu_per_probe_ms]}" "${R[k1v8,cpu_per_probe_ms]}" "${R[k1v$M,cpu_per_probe_ms]}" \
		"${R[k4v8,cpu_per_probe_ms]}" "${R[k4v$M,cpu_per_probe_ms]}" \
		"${R[f1,cpu_per_probe_ms]}" "${R[f8,cpu_per_probe_ms]}" "${R[f$M,cpu_per_probe_ms]}" "$BASE_MS"
	printf 'wake-ups/min at I=10, 1/8/%d vols: dmbyokd %s/%s/%s (per probe %s/%s/%s), its prober %s/%s/%s\n' \
		"$M" "${R[f1,ctx_per_min]}" "${R[f8,ctx_per_min]}" "${R[f$M,ctx_per_min]}" \
		"${R[f1,ctx_per_probe]}" "${R[f8,ctx_per_probe]}" "${R[f$M,ctx_per_probe]}" \
		"${R[f1,kids_ctx_per_min]}" "${R[f8,kids_ctx_per_min]}" "${R[f$M,kids_ctx_per_min]}"
	printf '  idle between probes: dmbyokd %s/%s/%s per min (counts %s/%s/%s, children %s/%s/%s); perf %s/%s/%s\n' \
		"${R[f1,idle_ctx_per_min]}" "${R[f8,idle_ctx_per_min]}" "${R[f$M,idle_ctx_per_min]}" \
		"${R[f1,idle_ctx]}" "${R[f8,idle_ctx]}" "${R[f$M,idle_ctx]}" \
		"${R[f1,idle_kids_ctx]}" "${R[f8,idle_kids_ctx]}" "${R[f$M,idle_kids_ctx]}" \
		"${R[f1,perf_ctx_per_min]:--}" "${R[f8,perf_ctx_per_min]:--}" "${R[f$M,perf_ctx_per_min]:--}"
	printf 'setup: %d formats %ss, %d opens %ss, %d closes %ss\n' $((M + 3)) "$SETUP_FORMAT" \
		"$OPEN_N" "$OPEN_S" "$CLOSE_N" "$CLOSE_S"
fi
echo "bench/agent.sh ran ${SECONDS}s"
echo "================================================================================="
stop_kms
