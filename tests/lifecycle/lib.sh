# Shared by the lifecycle scenarios, which run as root inside the test VM (tests/vm/run):
# real dm-crypt, the KMS emulator on the guest's loopback, assertions that fail loudly.
# shellcheck shell=bash
set -euo pipefail

: "${DMBYOK_BUILD_DIR:?run through tests/vm/run with DMBYOK_BUILD_DIR set}"
: "${DMBYOK_SOURCE_DIR:?run through tests/vm/run with DMBYOK_SOURCE_DIR set}"
DMBYOK=$DMBYOK_BUILD_DIR/src/cli/dmbyok
EMULATOR=$DMBYOK_SOURCE_DIR/tests/kms-emulator/kms-emulator
WORK=${VM_SCRATCH:-/var/tmp}/dmbyok-test
mkdir -p "$WORK"
export DMBYOK_RUNTIME_DIR=$WORK/run
# The emulators' bytecode, compiled in the build tree (tests/CMakeLists.txt): the source is
# read-only here, and compiling it at each start costs seconds of guest CPU.
export PYTHONPYCACHEPREFIX=$DMBYOK_BUILD_DIR/pycache

# Shell builtins where a helper is called often: under TCG every process started costs a
# sizeable fraction of a second of guest CPU.
usecs() { local t=${1:-$EPOCHREALTIME}; echo $((10#${t%.*}${t#*.})); } # usecs [EPOCHREALTIME]
T0=$(usecs)
elapsed() { local d=$(($(usecs) - T0)); printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000)); }
step() { printf '\n[%6ss] == %s\n' "$(elapsed)" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok: %s\n' "$*"; PASSED=$((${PASSED:-0} + 1)); }
check() { # check "what" command...
	local what=$1; shift
	"$@" || fail "$what"
	ok "$what"
}
# expect_exit CODE "what" command...: the command must exit with CODE.
expect_exit() {
	local want=$1 what=$2 got=0; shift 2
	"$@" >"$WORK/out" 2>"$WORK/err" || got=$?
	[ "$got" -eq "$want" ] || { cat "$WORK/out" "$WORK/err" >&2; fail "$what: exit $got, want $want"; }
	local last= line
	while IFS= read -r line || [ -n "$line" ]; do last=$line; done <"$WORK/err"
	ok "$what (exit $want: $last)"
}
finish() { echo; echo "$(basename "$0"): ${PASSED:-0} passed, 0 failed"; }

# --- the KMS emulator, running on the guest's own loopback ---------------------------
# start_kms [tls]: with tls, over HTTPS with a throw-away CA (AWS_CA_BUNDLE points to it).
start_kms() {
	local out=$WORK/kms.out tls=()
	: >"$out"
	if [ "${1:-}" = tls ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=dmbyok test CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
			2>/dev/null || fail "cannot make the test CA"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
			-keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null || fail "server key"
		printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
		openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
			-CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null ||
			fail "cannot sign the server certificate"
		tls=(--tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key")
		export AWS_CA_BUNDLE=$WORK/ca.pem
	fi
	# KMS_LISTEN: a fixed address lets a test stop and restart the KMS under a running agent.
	"$EMULATOR" --listen "${KMS_LISTEN:-127.0.0.1:0}" --state "$WORK/kms.json" \
		--audit-log "$WORK/audit.log" "${tls[@]}" >"$out" 2>"$WORK/kms.err" &
	KMS_PID=$!
	# Its start (Python, its crypto) takes 10-25 s in a loaded guest: 120 s at least.
	for _ in $(seq 1200); do
		grep -q 'listening on' "$out" 2>/dev/null && break
		kill -0 "$KMS_PID" 2>/dev/null || { cat "$WORK/kms.err" >&2; fail "KMS emulator died"; }
		sleep 0.1
	done
	KMS_URL=$(grep -o 'https\?://[0-9.:]*' "$out") || fail "KMS emulator never became ready"
	# dmbyok acts as the host principal, exactly as on a real instance.
	export AWS_ENDPOINT_URL_KMS=$KMS_URL AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
	export AWS_ACCESS_KEY_ID=AKIDHOST000000000001 AWS_SECRET_ACCESS_KEY=hostsecret
	unset AWS_SESSION_TOKEN
}
stop_kms() { kill "$KMS_PID" 2>/dev/null && wait "$KMS_PID" 2>/dev/null || true; }

# kms_as WHO OPERATION JSON: a signed KMS call (curl's SigV4) as "customer" or "host".
kms_as() {
	local who=$1 op=$2 body=$3 user
	case $who in
	customer) user=AKIDCUSTOMER00000001:customersecret ;;
	host) user=AKIDHOST000000000001:hostsecret ;;
	*) fail "kms_as: who is $who" ;;
	esac
	curl -sS --fail-with-body ${AWS_CA_BUNDLE:+--cacert "$AWS_CA_BUNDLE"} --aws-sigv4 "aws:amz:us-east-1:kms" --user "$user" \
		-H 'Content-Type: application/x-amz-json-1.1' -H "X-Amz-Target: TrentService.$op" \
		-d "$body" "$KMS_URL/"
}
# The emulator's control API (/_emulator/...), with curl: emulatorctl is Python, whose start
# costs over a second of guest CPU. aws_fault JSON: one fault ({"operation", "fault",
# "count", ...} as emulatorctl fault takes them); aws_expire_deletion KEY: a pending
# deletion ends now.
emulator_ctl() { # emulator_ctl METHOD PATH [JSON]
	curl -sS --fail-with-body ${AWS_CA_BUNDLE:+--cacert "$AWS_CA_BUNDLE"} -X "$1" \
		-H 'Content-Type: application/json' ${3:+-d "$3"} "$KMS_URL/_emulator/$2"
}
aws_fault() { emulator_ctl POST faults "$1" >/dev/null || fail "cannot inject the fault $1"; }
aws_clear_faults() { emulator_ctl DELETE faults >/dev/null || fail "cannot clear the faults"; }
aws_expire_deletion() {
	emulator_ctl POST expire-deletion "{\"KeyId\":\"$1\"}" >/dev/null || fail "cannot end $1's deletion"
}
json_get() { jq -er ".$1 | if type == \"string\" then . else tojson end"; }

# create_key ALIAS: a customer key with an alias; prints the key ARN.
create_key() {
	local arn
	arn=$(kms_as customer CreateKey '{"Description":"dmbyok test key"}' | json_get KeyMetadata.Arn)
	kms_as customer CreateAlias "{\"AliasName\":\"$1\",\"TargetKeyId\":\"$arn\"}" >/dev/null
	echo "$arn"
}

# The token of a volume, and the DEK it wraps (test oracle: KMS Decrypt through curl).
token_json() { cryptsetup token export --token-id "${2:-0}" "$1"; }
unwrap_dek_to() { # unwrap_dek_to DEVICE FILE
	local tok ct ctx
	tok=$(token_json "$1")
	ct=$(echo "$tok" | json_get ciphertext)
	ctx=$(echo "$tok" | json_get context)
	kms_as host Decrypt "{\"CiphertextBlob\":\"$ct\",\"EncryptionContext\":$ctx}" |
		json_get Plaintext | base64 -d >"$2"
	[ "$(stat -c %s "$2")" -eq 64 ] || fail "unwrapped DEK is not 64 bytes"
}

# --- the customer's KMS, whichever cloud: one adapter per provider ---------------------
# use_kms PROVIDER (aws, gcp or azure; default aws) sources kms-PROVIDER.sh, which defines
# the same interface for every provider, so that a scenario runs unchanged against each:
#   kms_start [tls]            the provider's emulator on the guest's loopback (gcp and azure
#                              always over TLS; aws with "tls") and this host's client
#                              environment, for dmbyok and a dmbyokd started from the scenario
#   kms_stop, kms_restart      an outage: the emulator stops, then comes back on the same
#                              address with the same state
#   kms_new_key NAME           a new customer key this host may use; prints the --key value
#   kms_disable KEY, kms_enable KEY   the customer disables / re-enables the key (version)
#   kms_deny KEY, kms_allow KEY       the customer removes / restores this host's access to
#                              that key only (key policy, IAM binding, vault access policy)
#   kms_token_key_ok TOKEN KEY the token's key_arn is KEY's current (primary) version
#   kms_rotate KEY             (gcp, azure) the customer rotates: a new primary version
#   kms_oracle_unwrap DEVICE FILE   the DEK, unwrapped by the emulator for this host through
#                              the provider's own API (the test's oracle), 64 bytes
#   kms_fault KIND COUNT       the next COUNT unwrap calls fail with KIND (throttle or
#                              unavailable, as the provider says them); kms_clear_faults
#   KMS_UNWRAP_OP              the unwrap call in the emulator's audit log (KMS_AUDIT)
#   KMS_UNREACHABLE, KMS_BAD_CREDENTIALS   environment assignments (arrays) pointing dmbyok
#                              at a closed port / at credentials the provider refuses
#   kms_region KEY             the region a token of KEY records
#   KMS_DISABLE_WHAT, KMS_DENY_WHAT, KMS_DENIED_RESULT, KMS_HOST_PRINCIPAL
use_kms() {
	PROVIDER=${1:-aws}
	[ -f "$DMBYOK_SOURCE_DIR/tests/lifecycle/kms-$PROVIDER.sh" ] || fail "no KMS adapter kms-$PROVIDER.sh"
	# shellcheck source=kms-aws.sh
	. "$DMBYOK_SOURCE_DIR/tests/lifecycle/kms-$PROVIDER.sh"
	echo "KMS provider: $PROVIDER"
}
# kms_unwrap_calls: how many unwrap calls the emulator answered (any result).
kms_unwrap_calls() { jq -r .operation "$KMS_AUDIT" 2>/dev/null | grep -cx "$KMS_UNWRAP_OP" || true; }
# for_provider P...: true when this run's provider is one of P. The checks that do not
# depend on the KMS run once, with aws; the others say so: `not_for_provider "STEP"`.
for_provider() { local p; for p; do [ "$PROVIDER" = "$p" ] && return 0; done; return 1; }
# not_for_provider WHAT: says, in the output, that a step is the aws run's (no silent skip).
not_for_provider() { printf '\n[%6ss] == %s: not KMS-dependent, checked in the aws run\n' "$(elapsed)" "$*"; }

# Memory-scan controls: a process is known to hold the key only once it has read it.
# has_read PID FILE: PID has FILE open and has read all of it (its offset is the file's size).
has_read() {
	local fd want
	want=$(readlink -f "$2")
	for fd in /proc/"$1"/fd/*; do
		[ "$(readlink -f "$fd")" = "$want" ] &&
			grep -qx "pos:[[:space:]]*$(stat -c %s "$2")" "/proc/$1/fdinfo/${fd##*/}" && return 0
	done
	return 1
}
# runs_as PID COMM: PID has exec'd COMM (a control's argv holds the key only after its exec).
runs_as() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

# Fingerprint of the first 16 MiB (the LUKS2 header area): "changes nothing" checks.
header_sum() { local s; s=$(head -c 16M "$1" | md5sum) && echo "${s%% *}"; }

# --- an application that fsyncs: the "no acknowledged write lost" oracle -------------
# start_writer FILE: appends numbered records to FILE, each fsync'ed; the number of the
# last acknowledged one (fsync returned) is in $WORK/acked (fsync-writer.c). Sets WRITER.
start_writer() {
	: >"$WORK/acked"
	rm -f "$WORK/writer.stop"
	"$DMBYOK_BUILD_DIR/tests/lifecycle/fsync-writer" "$1" "$WORK/acked" "$WORK/writer.stop" &
	WRITER=$!
}
acked() { echo "$(<"$WORK/acked")"; }
# The writer stops after the record it is writing; one stuck on a stalled device is killed.
stop_writer() {
	: >"$WORK/writer.stop"
	wait_quietly 60 eval '! kill -0 "$WRITER"' || kill "$WRITER" 2>/dev/null || true
	wait "$WRITER" 2>/dev/null || true
	ACKED=$(acked)
}
# check_acked_survived FILE WHAT: every record up to $ACKED is in FILE, in order.
check_acked_survived() {
	check "every acknowledged record ($((ACKED + 1))) survived $2, in order" \
		bash -c "head -n $((ACKED + 1)) '$1' | awk '{ if (\$2 != sprintf(\"%08d\", NR - 1)) exit 1 }' && [ \$(wc -l <'$1') -ge $((ACKED + 1)) ]"
}

# The agent, as the agent scenarios run it. state NAME: the mapping's state per `status`.
DMBYOKD=$DMBYOK_BUILD_DIR/src/agent/dmbyokd
state() { $DMBYOK status "$1" --json 2>/dev/null | jq -r .state; }
# wait_for SECONDS COMMAND...: poll until COMMAND succeeds; prints the time it took.
# The pause grows from 0.1 to 0.5 s: quick events are seen at once, and a long wait does
# not spend the guest's CPU (each poll starts processes) that what it waits for needs.
wait_for() {
	local t0=$EPOCHREALTIME deadline=$((EPOCHSECONDS + $1)) n=0 pause
	shift
	while [ "$EPOCHSECONDS" -lt $deadline ]; do
		if "$@" >/dev/null 2>&1; then
			awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}'
			return 0
		fi
		case $n in 0 | 1 | 2) pause=0.1 ;; 3 | 4 | 5) pause=0.2 ;; 6 | 7) pause=0.3 ;; *) pause=0.5 ;; esac
		n=$((n + 1))
		sleep $pause
	done
	return 1
}
wait_quietly() { wait_for "$@" >/dev/null; }
# wait_state NAME STATE SECONDS: poll until NAME is in STATE; prints the time it took.
wait_state() { wait_for "$3" eval "[ \"\$(state $1)\" = $2 ]"; }
# start_agent [OPTIONS...]: dmbyokd in the background, its log in $WORK/agent.log; returns
# once it has adopted what exists (its "Watching N key(s)" line, logged after that).
start_agent() {
	local from
	from=$(wc -l 2>/dev/null <"$WORK/agent.log" || echo 0)
	"$DMBYOKD" "$@" >>"$WORK/agent.log" 2>&1 &
	AGENT=$!
	for _ in $(seq 300); do
		awk -v from="$from" 'NR > from && /Watching [0-9]+ key\(s\)/ { found = 1 } END { exit !found }' \
			"$WORK/agent.log" && return 0
		kill -0 $AGENT 2>/dev/null || { cat "$WORK/agent.log" >&2; fail "dmbyokd died"; }
		sleep 0.2
	done
	cat "$WORK/agent.log" >&2
	fail "dmbyokd did not start (no \"Watching N key(s)\" within 60 s)"
}

# release_suspended: after a failure, a volume left locked (suspended, its file system's
# dirty pages held) would make the harness's final sync wait until the VM's timeout; the
# error target lets it end. For EXIT traps: `[ $rc -eq 0 ] || release_suspended`.
release_suspended() {
	local n len
	for n in $(dmsetup info -c --noheadings -o name,suspended 2>/dev/null |
		awk -F: '$2 == "Suspended" { print $1 }'); do
		len=$(dmsetup table "$n" | awk '{ s += $2 } END { print s }')
		echo "releasing $n (suspended) after the failure" >&2
		dmsetup load "$n" --table "0 $len error" && dmsetup resume "$n" || true
	done
}

# --- under systemd (tests/vm/run --systemd): dmbyok's units and udev rule as shipped ----
# install_units ENVFILE_LINES...: the units of systemd/ and the rule of udev/ into /etc,
# only the binaries' paths changed to this build's; /etc/dmbyok/dmbyokd.env gets the KMS
# settings of start_kms plus the lines given. The runtime state stays under $WORK.
install_units() {
	local u
	mkdir -p /etc/udev/rules.d
	for u in "$DMBYOK_SOURCE_DIR"/systemd/*.service; do
		sed -e "s|/usr/sbin/dmbyokd|$DMBYOKD|g" -e "s|/usr/sbin/dmbyok\b|$DMBYOK|g" "$u" \
			>"/etc/systemd/system/$(basename "$u")"
	done
	cp "$DMBYOK_SOURCE_DIR"/udev/*.rules /etc/udev/rules.d/
	agent_environment "$@"
}
# install_package ENVFILE_LINES...: dmbyok's Debian package (the one in DMBYOK_DEB_DIR, made
# by the package-deb test) installed with dpkg -i, as an administrator or an image build
# would, then /etc/dmbyok/dmbyokd.env as install_units writes it. Works in the --prepare
# chroot (nothing is started there; the postinst only enables the agent).
install_package() {
	local debs=("${DMBYOK_DEB_DIR:?DMBYOK_DEB_DIR not set: the test needs the package-deb fixture}"/dmbyok_*.deb)
	[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "want one dmbyok_*.deb in $DMBYOK_DEB_DIR: ${debs[*]}"
	# man-db's trigger would re-index every manual page over 9p: not the package's business.
	rm -f /var/lib/man-db/auto-update
	dpkg -i "${debs[0]}" >"$WORK/dpkg.out" 2>&1 || { cat "$WORK/dpkg.out" >&2; fail "dpkg -i ${debs[0]}"; }
	echo "installed $(dpkg-query -W -f='${Package} ${Version}' dmbyok)"
	agent_environment "$@"
}
# agent_environment ENVFILE_LINES...: the installed dmbyokd.service pointed at this test's
# KMS (start_kms) and runtime directory under $WORK, plus the lines given.
agent_environment() {
	mkdir -p /etc/dmbyok /etc/systemd/system/dmbyokd.service.d
	printf '[Service]\nReadWritePaths=%s\n' "$WORK" >/etc/systemd/system/dmbyokd.service.d/test.conf
	{
		echo "AWS_ENDPOINT_URL_KMS=$KMS_URL"
		echo "AWS_REGION=us-east-1"
		echo "AWS_EC2_METADATA_DISABLED=true"
		echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
		echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
		echo "DMBYOK_RUNTIME_DIR=$DMBYOK_RUNTIME_DIR"
		echo "DMBYOK_VOLUMES=/etc/dmbyok/volumes"
		printf '%s\n' "$@"
	} >/etc/dmbyok/dmbyokd.env
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		udevadm control --reload
	fi
}
# mappings_of DEVICE: how many device-mapper devices are stacked on DEVICE.
mappings_of() { ls "/sys/class/block/$(basename "$(readlink -f "$1")")/holders" | wc -l; }
