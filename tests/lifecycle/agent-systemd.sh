#!/usr/bin/env bash
# The shipped systemd/dmbyokd.service under systemd as PID 1 (tests/vm/run --systemd): it
# verifies, starts (Type=notify: ready once every mapping is adopted), locks a volume whose
# key is disabled and unlocks it when the key is back, despite its sandbox; stops cleanly.
# Prints systemd-analyze's exposure score.
. "$(dirname "$0")/lib.sh"
UNIT=/etc/systemd/system/dmbyokd.service
[ "$(cat /proc/1/comm)" = systemd ] || fail "run with tests/vm/run --systemd"

state() { $DMBYOK status "$1" --json 2>/dev/null | jq -r .state; }
wait_state() { for _ in $(seq 200); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.1; done; return 1; }

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
DMBYOKD_OPTIONS=--check-interval 2 --restore-interval 1
EOF
# The test keeps its runtime state under $WORK instead of /run/dmbyok.
printf '[Service]\nReadWritePaths=%s\n' "$WORK" >"$UNIT.d/test.conf"
systemctl daemon-reload
# --man=no: the man page is not installed in the guest (the package installs it).
check "systemd-analyze verify accepts the unit" systemd-analyze verify --man=no "$UNIT"

step "start, revoke, restore, stop"
check "systemctl start returns once the agent said READY" systemctl start dmbyokd.service
check "the service is active" systemctl is-active --quiet dmbyokd.service
check "its status line says what it watches" bash -c "systemctl show -P StatusText dmbyokd.service | grep -q 'Watching 1 key'"
kms_as customer DisableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
check "the sandboxed agent locks the volume of the disabled key" wait_state svc locked
check "no key left in the table" bash -c "! dmsetup table svc | grep -q ':logon:'"
kms_as customer EnableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
check "and unlocks it when the key is back" wait_state svc active
check "systemctl stop" systemctl stop dmbyokd.service
check "it stopped cleanly (not failed)" bash -c "[ \$(systemctl show -P Result dmbyokd.service) = success ]"
echo "--- journal"
journalctl -u dmbyokd.service --no-pager -o cat | tail -n 20
echo "--- systemd-analyze security"
systemd-analyze security --no-pager dmbyokd.service | tail -n 1
check "close" $DMBYOK close svc --quiet
stop_kms
finish
