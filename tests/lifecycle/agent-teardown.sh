#!/usr/bin/env bash
# dmbyokd past the lock, on real dm-crypt: a revoked key's unused mapping is removed at
# once and an in-use one, after the on-revoke hook and teardown-after, gets the error target
# (its writer gets EIO); restore maps both again as they were and runs on-restore; no
# acknowledged write is lost. Then the alias is moved to a new key: the agent re-wraps, and
# disabling the old key locks nothing. Finally the new key's deletion completes: the
# volumes are torn down for good.
. "$(dirname "$0")/lib.sh"
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() {
	local rc=$?
	kill -9 "${AGENT:-}" "${WRITER:-}" 2>/dev/null || true
	[ "$rc" -eq 0 ] || release_suspended
}
trap cleanup EXIT
mapped() { dmsetup info "$1" >/dev/null 2>&1; }
target() { dmsetup table "$1" 2>/dev/null | awk '{print $3}'; }
hook_saw() { grep -qx "$1" "$WORK/hooks.log"; }

step "one key, two volumes: t1 mounted with a writer, t2 unused with known data"
start_kms
KEY=$(create_key alias/t)
for v in "t1 /dev/vda" "t2 /dev/vdb"; do
	set -- $v
	check "format $2" $DMBYOK format "$2" --key alias/t --quiet
	check "open it as $1" $DMBYOK open "$2" "$1" --quiet
done
head -c 1M /dev/urandom >"$WORK/pattern"
dd if="$WORK/pattern" of=/dev/mapper/t2 oflag=direct bs=1M status=none
mkfs.ext4 -q /dev/mapper/t1
mount /dev/mapper/t1 "$MNT"
start_writer "$MNT/log"
printf '#!/bin/sh\necho "$1 $2 $DMBYOK_MAPPER" >>%s\n' "$WORK/hooks.log" >"$WORK/hook"
chmod 755 "$WORK/hook"
: >"$WORK/hooks.log"
# Settings from a config file (as /etc/dmbyok/dmbyokd.conf), one overridden by an option.
cat >"$WORK/dmbyokd.conf" <<EOC
# dmbyokd settings for this scenario
check-interval = 5
restore-interval = 1s
teardown-after = 4
lock-timeout = 10
on-revoke = $WORK/hook
on-restore = $WORK/hook
metrics-file = $WORK/dmbyok.prom
EOC
chmod 600 "$WORK/dmbyokd.conf"
start_agent --config "$WORK/dmbyokd.conf" --check-interval 1
check "the option overrides the file's check-interval" wait_quietly 60 grep -q "probe every 1 s" "$WORK/agent.log"
check "the agent probed the key" wait_quietly 60 bash -c "$DMBYOK status t1 --json | jq -e '.agent.probes >= 1 and .agent.last_probe_class == \"ok\"' >/dev/null"
check "both stay active under the agent" test "$(state t1)/$(state t2)" = active/active
metric() { awk -v m="$1" '$1 == m { print $2 }' "$WORK/dmbyok.prom"; }
check "the metrics file counts 2 active volumes" wait_quietly 10 eval '[ "$(metric "dmbyok_volumes{state=\"active\"}")" = 2 ]'

step "the customer disables the key"
kms_as customer DisableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
t=$(wait_for 60 eval '! mapped t2') || { cat "$WORK/agent.log"; fail "t2 was not removed"; }
echo "revocation -> unused t2 removed in $t s"
check "t1 (in use) is not removed" mapped t1
# The lock's child runs t1's hook and removes t2 in the order of its volume list: poll.
check "the on-revoke hook ran for t1" wait_quietly 30 hook_saw 'revoke t1 /dev/mapper/t1'
check "and not for t2 (unused: removed without it)" bash -c "! grep -q t2 '$WORK/hooks.log'"
check "t2's record says torn down" jq -e .torn_down "$DMBYOK_RUNTIME_DIR/mappings/t2.json"
t=$(wait_for 60 eval '[ "$(target t1)" = error ]') || { cat "$WORK/agent.log"; fail "t1 never got the error target"; }
echo "teardown-after 4 s -> t1 error target after $t more s"
check "the metrics file counts them torn down, and the lock's duration" wait_quietly 10 eval \
	'[ "$(metric "dmbyok_volumes{state=\"torn-down\"}")" = 2 ] && [ "$(metric "dmbyok_lock_duration_seconds_count{result=\"ok\"}")" -ge 1 ]'
check "nothing of t1's key or table is left in the kernel" bash -c "! dmsetup table t1 | grep -q crypt"
check "the writer got EIO and stopped" wait_quietly 10 eval '! kill -0 $WRITER'
stop_writer
echo "acknowledged before the revocation: $((ACKED + 1)) records"

step "the customer enables the key again"
kms_as customer EnableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
t=$(wait_for 60 eval 'mapped t2 && [ "$(target t1)" = crypt ] && [ "$(target t2)" = crypt ]') ||
	{ cat "$WORK/agent.log"; fail "not reprovisioned"; }
echo "restore -> both crypt mappings back in $t s"
check "t2's data is intact" cmp <(head -c 1M /dev/mapper/t2) "$WORK/pattern"
check "t2 was re-created with the same dm UUID form" bash -c "dmsetup info -c --noheadings -o uuid t2 | grep -q '^CRYPT-LUKS2-.*-t2\$'"
check "the on-restore hook ran for both" wait_quietly 10 eval "grep -qx 'restore t1 /dev/mapper/t1' '$WORK/hooks.log' && grep -qx 'restore t2 /dev/mapper/t2' '$WORK/hooks.log'"
check "both active per status" test "$(state t1)/$(state t2)" = active/active
check "the metrics file: restored, probes counted by class" wait_quietly 10 eval \
	'[ "$(metric "dmbyok_volumes{state=\"active\"}")" = 2 ] && [ "$(metric "dmbyok_restore_duration_seconds_count{result=\"ok\"}")" -ge 1 ] && grep -q "^dmbyok_probes_total{.*class=\"key-revoked\"}" "$WORK/dmbyok.prom"'

umount "$MNT"
check "close t1" $DMBYOK close t1 --quiet
check "reopen t1" $DMBYOK open /dev/vda t1 --quiet
check "its file system is clean after journal replay" bash -c "mount /dev/mapper/t1 '$MNT' && umount '$MNT' && fsck.ext4 -fn /dev/mapper/t1"
mount /dev/mapper/t1 "$MNT"
check_acked_survived "$MNT/log" "revocation, error target and reprovisioning"

step "the customer moves alias/t to a new key: the agent re-wraps"
KEY2=$(kms_as customer CreateKey '{"Description":"rotated"}' | json_get KeyMetadata.Arn)
kms_as customer UpdateAlias "{\"AliasName\":\"alias/t\",\"TargetKeyId\":\"$KEY2\"}" >/dev/null
t=$(wait_for 30 eval "[ \"\$($DMBYOK dump /dev/vda --json | jq -r .token.key_arn)\" = $KEY2 ] && [ \"\$($DMBYOK dump /dev/vdb --json | jq -r .token.key_arn)\" = $KEY2 ]") ||
	{ cat "$WORK/agent.log"; fail "not re-wrapped"; }
echo "alias re-target -> both re-wrapped in $t s"
check "the mappings were not touched" test "$(state t1)/$(state t2)" = active/active
check "the agent now watches the new key" wait_quietly 10 grep -q "Watching key $KEY2" "$WORK/agent.log"
kms_as customer DisableKey "{\"KeyId\":\"$KEY\"}" >/dev/null
sleep 4
check "disabling the old key locks nothing" test "$(state t1)/$(state t2)" = active/active

step "the new key is deleted (its waiting period ends): torn down for good"
umount "$MNT"
kms_as customer ScheduleKeyDeletion "{\"KeyId\":\"$KEY2\",\"PendingWindowInDays\":7}" >/dev/null
aws_expire_deletion "$KEY2"
t=$(wait_for 60 eval '! mapped t1 && ! mapped t2') || { cat "$WORK/agent.log"; fail "not torn down"; }
echo "key deleted -> both removed in $t s"
# The volumes may have been torn down as revoked (PendingDeletion) before the deletion
# completed; a locked key's deletion check runs every 6th probe, so the verdict follows.
t=$(wait_for 30 grep -q "no longer exists.*unrecoverable" "$WORK/agent.log") ||
	{ cat "$WORK/agent.log"; fail "the agent never said the data is unrecoverable"; }
ok "the agent says the data is unrecoverable ($t s after the teardown)"
sleep 3
check "and never maps them again" bash -c "! dmsetup info t1 >/dev/null 2>&1 && ! dmsetup info t2 >/dev/null 2>&1"
check "unlock of a torn-down volume whose key is gone fails as revoked (exit 3)" bash -c "$DMBYOK unlock t1 --quiet; [ \$? -eq 3 ]"
check "close forgets a torn-down volume" $DMBYOK close t1 --quiet
check "its record is gone" test ! -e "$DMBYOK_RUNTIME_DIR/mappings/t1.json"
kill $AGENT; wait $AGENT 2>/dev/null || true
echo "--- agent log"
cat "$WORK/agent.log"
stop_kms
finish
