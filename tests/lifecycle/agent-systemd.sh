#!/usr/bin/env bash
# The shipped systemd/dmbyokd.service under systemd as PID 1 (tests/vm/run --systemd): it
# verifies, starts (Type=notify: ready once every mapping is adopted), locks a volume whose
# key is disabled and unlocks it when the key is back, despite its sandbox; stops cleanly.
# Prints systemd-analyze's exposure score. The host-side audit trail: every KMS call of the
# agent is a journal entry (MESSAGE_ID DMBYOK_MESSAGE_KMS_CALL) with its fields, and the
# journal and the KMS's own audit log name the same calls, one to one by request id.
. "$(dirname "$0")/lib.sh"
UNIT=/etc/systemd/system/dmbyokd.service
[ "$(cat /proc/1/comm)" = systemd ] || fail "run with tests/vm/run --systemd"

# The agent's KMS call entries (journalctl -o json, one object per line); extra matches as args.
AUDIT_ID=$(sed -n 's/^#define DMBYOK_MESSAGE_KMS_CALL "\([0-9a-f]\{32\}\)"$/\1/p' \
	"$DMBYOK_SOURCE_DIR/include/dmbyok/message-ids.h")
[ -n "$AUDIT_ID" ] || fail "no DMBYOK_MESSAGE_KMS_CALL in message-ids.h"
kms_calls() { journalctl --no-pager -o json MESSAGE_ID="$AUDIT_ID" SYSLOG_IDENTIFIER=dmbyokd "$@"; }
wait_calls() { # wait_calls N [MATCHES...]: until the journal holds N such entries
	local n=$1; shift
	for _ in $(seq 300); do [ "$(kms_calls "$@" | wc -l)" -ge "$n" ] && return 0; sleep 0.2; done
	return 1
}
# "REQUEST_ID OPERATION ok|failed" of each KMS call, from either side.
journal_calls() { jq -r '"\(.REQUEST_ID) \(.OPERATION) \(if .RESULT == "ok" then "ok" else "failed" end)"' "$1" | sort; }
kms_audit_calls() { # KMS audit lines from line $1 on, by the host's principal
	tail -n +"$1" "$WORK/audit.log" |
		jq -r 'select(.principal == "arn:aws:iam::111122223333:role/dmbyok-host") |
			"\(.request_id) \(.operation) \(if .result == "Success" then "ok" else "failed" end)"' | sort
}
jq_true() { jq -e "$@" >/dev/null; }
state() { $DMBYOK status "$1" --json 2>/dev/null | jq -r .state; }
wait_state() { for _ in $(seq 300); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.2; done; return 1; }

step "a volume under a customer key"
start_kms
KEY=$(create_key alias/svc)
check "format" $DMBYOK format /dev/vda --key alias/svc --quiet
check "open" $DMBYOK open /dev/vda svc --quiet

step "install the unit as shipped (only the binary's path differs) and its environment"
sed "s|^ExecStart=/usr/sbin/dmbyokd|ExecStart=$DMBYOK_BUILD_DIR/src/agent/dmbyokd|" \
	"$DMBYOK_SOURCE_DIR/systemd/dmbyokd.service" >"$UNIT"
mkdir -p /etc/dmbyok "$UNIT.d"
cat >/etc/dmbyok/dmbyokd.env <<EOF
AWS_ENDPOINT_URL_KMS=$KMS_URL
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
DMBYOK_RUNTIME_DIR=$DMBYOK_RUNTIME_DIR
DMBYOKD_OPTIONS=--check-interval 2 --restore-interval 1 --policy-data-paths /srv/policed --policy-unmount yes
EOF
# The test keeps its runtime state under $WORK instead of /run/dmbyok.
printf '[Service]\nReadWritePaths=%s\n' "$WORK" >"$UNIT.d/test.conf"
systemctl daemon-reload
# --man=no: the man page is not installed in the guest (the package installs it).
check "systemd-analyze verify accepts the unit" systemd-analyze verify --man=no "$UNIT"

step "start, revoke, restore, stop"
# The KMS's audit log before the agent: from here to its stop, only the agent uses the host's
# credentials (the customer's calls are another principal), so both records must match.
AUDIT_FROM=$(($(wc -l <"$WORK/audit.log") + 1))
check "systemctl start returns once the agent said READY" systemctl start dmbyokd.service
check "the service is active" systemctl is-active --quiet dmbyokd.service
check "its status line says what it watches" bash -c "systemctl show -P StatusText dmbyokd.service | grep -q 'Watching 1 key'"
check "its probes are in the journal as they happen: MESSAGE_ID=$AUDIT_ID RESULT=ok" \
	wait_calls 2 RESULT=ok KEY_ARN="$KEY"
kms_as customer DisableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
# Locked, then torn down at once if nobody holds it open (this one is not mounted).
wait_locked() { for _ in $(seq 300); do case $(state "$1") in locked | torn-down) return 0 ;; esac; sleep 0.2; done; return 1; }
check "the sandboxed agent locks the volume of the disabled key" wait_locked svc
check "no key left in the table" bash -c "! dmsetup table svc 2>/dev/null | grep -q ':logon:'"
kms_as customer EnableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
check "and unlocks it when the key is back" wait_state svc active

# The sandboxed agent has a mount namespace of its own: it has systemd unmount for the host.
mkdir -p /srv/policed/plain
mkfs.ext4 -q /dev/vdb
mount /dev/vdb /srv/policed/plain
wait_quietly 60 eval '! mountpoint -q /srv/policed/plain' ||
	{ journalctl -u dmbyokd.service --no-pager -o cat | grep -v "^KMS " | tail -n 30; findmnt /srv/policed/plain; fail "a plain file system under the data path stayed mounted"; }
ok "a plain file system under the data path is unmounted for the host, through systemd"
check "the journal says so" bash -c "journalctl --sync; journalctl -u dmbyokd.service --no-pager -o cat | grep -q 'Asked systemd to unmount /srv/policed/plain'"
check "with the alert's own MESSAGE_ID and fields" bash -c "journalctl --no-pager -o json SYSLOG_IDENTIFIER=dmbyokd MOUNT_POINT=/srv/policed/plain | jq -e 'select(.DATA_PATH == \"/srv/policed\" and .SOURCE == \"/dev/vdb\" and .STATUS == \"violation\")' >/dev/null"
check "systemctl stop" systemctl stop dmbyokd.service
check "it stopped cleanly (not failed)" bash -c "[ \$(systemctl show -P Result dmbyokd.service) = success ]"

step "the host-side audit trail: one journal entry per KMS call, the same calls as the KMS's"
# Every child has exited (the agent waits for them on SIGTERM); --sync: journald has
# processed what they sent before it returns.
journalctl --sync
kms_calls >"$WORK/calls.json"
ids=$DMBYOK_SOURCE_DIR/include/dmbyok/message-ids.h
id_of() { sed -n "s/^#define DMBYOK_MESSAGE_$1 \"\([0-9a-f]*\)\"/\1/p" "$ids"; }
event() { journalctl --no-pager -o json SYSLOG_IDENTIFIER=dmbyokd MESSAGE_ID="$(id_of "$1")"; }
check "the agent's events are structured: started, key revoked (REASON=revoked), locked or torn down, restored — each with KEY_ARN and VOLUME=svc" \
	bash -c "$(declare -f id_of event); ids='$ids'
		event AGENT_STARTED | jq -se 'length >= 1' &&
		event KEY_REVOKED | jq -se 'any(.REASON == \"revoked\" and .KEY_ARN == \"$KEY\" and .VOLUME == \"svc\")' &&
		{ event VOLUMES_LOCKED; event TORN_DOWN; } | jq -se 'any(.KEY_ARN == \"$KEY\" and .VOLUME == \"svc\")' &&
		event RESTORED | jq -se 'any(.KEY_ARN == \"$KEY\" and .VOLUME == \"svc\" and .CLASS == \"ok\")'"
echo "--- one entry (journalctl -o json MESSAGE_ID=$AUDIT_ID)"
jq -c -s 'map(select(.RESULT == "ok"))[0] | {MESSAGE, PRIORITY, OPERATION, PROVIDER, REGION,
	KEY_ID, KEY_ARN, ENCRYPTION_CONTEXT, RESULT, LATENCY_MS, REQUEST_ID, CODE_FILE}' "$WORK/calls.json"
check "successful probes name the key as the KMS answered, with a latency" \
	jq_true -s --arg key "$KEY" '[.[] | select(.OPERATION == "Decrypt" and .RESULT == "ok")] |
		length >= 2 and all(.KEY_ID == $key and .KEY_ARN == $key and
			(.LATENCY_MS | test("^[0-9]+$")) and .PRIORITY == "6" and .ERRNO == null)' "$WORK/calls.json"
check "the disabled key's answers are there too: RESULT=key-revoked, ERRNO=128, no KEY_ARN" \
	jq_true -s '[.[] | select(.OPERATION == "Decrypt" and .RESULT != "ok")] | length >= 1 and
		all(.RESULT == "key-revoked" and .ERRNO == "128" and .KEY_ARN == null and .DETAIL != null)' \
	"$WORK/calls.json"
check "every entry has the provider, region, canonical context and a request id" \
	jq_true -s 'all(.PROVIDER == "aws" and .REGION == "us-east-1" and
		(.ENCRYPTION_CONTEXT // "{\"dmbyok:volume\":" | startswith("{\"dmbyok:volume\":")) and
		(.REQUEST_ID | test("^[0-9a-f-]{36}$")))' "$WORK/calls.json"
journal_calls "$WORK/calls.json" >"$WORK/calls.journal"
# The emulator writes its audit line just after its answer: give the last one a moment.
for _ in $(seq 100); do
	kms_audit_calls "$AUDIT_FROM" >"$WORK/calls.kms"
	[ -z "$(comm -23 "$WORK/calls.journal" "$WORK/calls.kms")" ] && break
	sleep 0.1
done
echo "--- KMS calls by the agent: journal $(wc -l <"$WORK/calls.journal") ($(grep -c ' Decrypt ' "$WORK/calls.journal") Decrypt)," \
	"KMS audit log $(wc -l <"$WORK/calls.kms") ($(grep -c ' Decrypt ' "$WORK/calls.kms") Decrypt)"
check "the journal and the KMS's audit log name the same calls (request id, operation, outcome)" \
	diff "$WORK/calls.journal" "$WORK/calls.kms"
echo "--- entries attributed to the unit (_SYSTEMD_UNIT): $(kms_calls _SYSTEMD_UNIT=dmbyokd.service | wc -l) of $(wc -l <"$WORK/calls.json")"

step "no key material anywhere in the journal"
unwrap_dek_to /dev/vda "$WORK/dek"
DEK_B64=$(base64 -w0 "$WORK/dek") DEK_HEX=$(od -An -tx1 -v "$WORK/dek" | tr -d ' \n')
WRAPPED=$(token_json /dev/vda | json_get ciphertext)
rm -f "$WORK/dek"
journalctl --no-pager -o export >"$WORK/journal.export"
check "the export holds the agent's entries (a search there finds the key ARN)" \
	grep -a -q -F "KEY_ARN=$KEY" "$WORK/journal.export"
check "neither the data key (base64, hex, either half) nor the wrapped key is in the journal" \
	bash -c "! grep -a -q -F -e '$DEK_B64' -e '${DEK_B64:0:40}' -e '${DEK_HEX:0:64}' \
		-e '${DEK_HEX:64}' -e '$WRAPPED' -e '${WRAPPED:0:40}' '$WORK/journal.export'"
rm -f "$WORK/journal.export"

step "journalctl -x explains the entries (catalog/dmbyok.catalog)"
cp "$DMBYOK_SOURCE_DIR/catalog/dmbyok.catalog" /usr/lib/systemd/catalog/
check "the catalog compiles" journalctl --update-catalog
check "every dmbyok id has its text" bash -c "[ \$(journalctl --list-catalog | grep -c ' dmbyok: ') -eq \
	\$(grep -c '^#define DMBYOK_MESSAGE_' '$DMBYOK_SOURCE_DIR/include/dmbyok/message-ids.h') ]"
check "journalctl -x shows the KMS call's explanation" bash -c \
	"journalctl -x --no-pager -n 1 MESSAGE_ID=$AUDIT_ID | grep -q 'matched one to one'"
echo "--- journal"
journalctl -u dmbyokd.service --no-pager -o cat | tail -n 20
echo "--- systemd-analyze security"
systemd-analyze security --no-pager dmbyokd.service | tail -n 1
check "close" $DMBYOK close svc --quiet
stop_kms
finish
