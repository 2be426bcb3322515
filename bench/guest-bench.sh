#!/usr/bin/env bash
# Runs inside the VM (see bench/run). Prints figures; asserts nothing about speed.
WHAT=${1:-all}
# The agent's figures have their own script (and KMS, keys and disk: /dev/vdd).
[ "$WHAT" = agent ] && exec bash "$DMBYOK_SOURCE_DIR/bench/agent.sh" /dev/vdd
[ "$WHAT" = attach ] && exec bash "$DMBYOK_SOURCE_DIR/bench/attach.sh" /dev/vdd
[ "$WHAT" = plugin ] && exec bash "$DMBYOK_SOURCE_DIR/bench/plugin.sh" /dev/vdb
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
RAW=/dev/vda DMB=/dev/vdb STOCK=/dev/vdc
N=${BENCH_UNLOCK_ROUNDS:-20}
RUNTIME=${BENCH_FIO_SECONDS:-8}

start_kms
create_key alias/bench >/dev/null
$DMBYOK format $DMB --key alias/bench 2>/dev/null >/dev/null
unwrap_dek_to $DMB "$WORK/dek"

# cpu_of CMD...: user+sys CPU seconds of N rounds of CMD (children's times, from `times`).
cpu_of() {
	(
		for _ in $(seq "$N"); do "$@"; done
		times
	) | tail -n 1 | awk '{
		split($1, u, "m"); split($2, s, "m");
		printf "%.4f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
}
dmbyok_round() { $DMBYOK open $DMB b 2>/dev/null && $DMBYOK close b 2>/dev/null; }
stock_round() { cryptsetup open --volume-key-file "$WORK/dek" $DMB b && cryptsetup close b; }

if [ "$WHAT" = unlock ] || [ "$WHAT" = all ]; then
	step "unlock cost per volume: dmbyok's fast path vs cryptsetup's volume-key activation"
	"$DMBYOK_BUILD_DIR/bench/unlock-cost" $DMB "$N"
	echo "  (the header's LUKS2 digest: $(cryptsetup luksDump $DMB | awk '/^Digests:/{d=1} d && /Iterations:/{print $2 " PBKDF2 iterations"; exit}'))"
	step "whole commands, $N rounds of open+close (process start-up included)"
	D=$(cpu_of dmbyok_round)
	S=$(cpu_of stock_round)
	echo "  dmbyok open+close                        $(awk -v t="$D" -v n="$N" 'BEGIN{printf "%7.1f ms CPU per round", 1000*t/n}')"
	echo "  cryptsetup open --volume-key-file+close  $(awk -v t="$S" -v n="$N" 'BEGIN{printf "%7.1f ms CPU per round", 1000*t/n}')"
	echo "  ratio: $(awk -v d="$D" -v s="$S" 'BEGIN{printf "%.1f", s/d}')x"
	W0=$(date +%s.%N); dmbyok_round; W1=$(date +%s.%N)
	echo "  one dmbyok open+close, wall: $(awk -v a=$W0 -v b=$W1 'BEGIN{printf "%.0f ms", 1000*(b-a)}') (includes the KMS round trip)"
fi

fio_job() { # fio_job DEVICE RW BS -> "MiB/s IOPS"
	fio --name=b --filename="$1" --rw="$2" --bs="$3" --direct=1 --ioengine=libaio \
		--iodepth=16 --numjobs=1 --time_based --runtime="$RUNTIME" --ramp_time=1 \
		--size=512M --group_reporting --output-format=json 2>/dev/null |
		jq -r '.jobs[0] | ((.read.bw + .write.bw) / 1024) as $bw |
			(.read.iops + .write.iops) as $iops | "\($bw | floor) \($iops | floor)"'
}

if [ "$WHAT" = io ] || [ "$WHAT" = all ]; then
	step "throughput (fio, direct I/O, iodepth 16, ${RUNTIME}s each)"
	printf 'x' >"$WORK/pass"
	cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$WORK/pass" $STOCK
	cryptsetup open --key-file "$WORK/pass" $STOCK stock
	declare -A R
	CONFIGS="raw stock dmbyok dmbyok-bypass"
	for dev in $CONFIGS; do
		case $dev in
		raw) path=$RAW ;;
		stock) path=/dev/mapper/stock ;;
		dmbyok)
			$DMBYOK open $DMB fast 2>/dev/null
			echo "  tables: stock  $(dmsetup table stock | cut -d' ' -f4,6- )"
			echo "          dmbyok $(dmsetup table fast | cut -d' ' -f4,6- )"
			path=/dev/mapper/fast ;;
		dmbyok-bypass)
			$DMBYOK close fast 2>/dev/null
			$DMBYOK open $DMB fast --perf no_read_workqueue,no_write_workqueue 2>/dev/null
			path=/dev/mapper/fast ;;
		esac
		for w in "read 1M" "write 1M" "randread 4k" "randwrite 4k"; do
			set -- $w
			R[$dev,$1]=$(fio_job "$path" "$1" "$2")
		done
	done
	printf '  %-14s %14s %14s %14s %14s\n' "" "seq read MiB/s" "seq write MiB/s" "rand read IOPS" "rand write IOPS"
	for dev in $CONFIGS; do
		printf '  %-14s %14s %14s %14s %14s\n' "$dev" "${R[$dev,read]% *}" "${R[$dev,write]% *}" \
			"${R[$dev,randread]#* }" "${R[$dev,randwrite]#* }"
	done
	echo "  stock = a cryptsetup luksFormat volume with cryptsetup's defaults; dmbyok = dmbyok's"
	echo "  default table; dmbyok-bypass = --perf no_read_workqueue,no_write_workqueue."
	echo "  stock and dmbyok differ only in the encryption sector size (see the tables above)."
	echo "  ratios:"
	for w in read write randread randwrite; do
		col=1; [ "$w" = randread ] || [ "$w" = randwrite ] && col=2
		pick() { echo "${R[$1,$w]}" | cut -d' ' -f$col; }
		printf '    %-10s dmbyok/stock %s   dmbyok/raw %s   bypass/dmbyok %s\n' "$w" \
			"$(awk -v a="$(pick dmbyok)" -v b="$(pick stock)" 'BEGIN{printf "%.2f", a/b}')" \
			"$(awk -v a="$(pick dmbyok)" -v b="$(pick raw)" 'BEGIN{printf "%.2f", a/b}')" \
			"$(awk -v a="$(pick dmbyok-bypass)" -v b="$(pick dmbyok)" 'BEGIN{printf "%.2f", a/b}')"
	done
	$DMBYOK close fast 2>/dev/null; cryptsetup close stock
fi
rm -f "$WORK/dek"
stop_kms
if [ "$WHAT" = all ]; then
	exec bash "$DMBYOK_SOURCE_DIR/bench/agent.sh" /dev/vdd
fi
