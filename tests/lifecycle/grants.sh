#!/usr/bin/env bash
# Per-volume KMS grants on real dm-crypt. Key K's policy lets this host generate data keys,
# create grants and describe the key, but not Decrypt: each volume is reached only through
# its own grant, which `format --grant` creates for exactly that volume's encryption context.
#  - Bad input and a KMS failure during format leave the disk blank and no grant behind.
#  - The token, `dump` and the KMS's own grant list agree (id, grantee, retiring principal,
#    operations, EncryptionContextEquals).
#  - dmbyokd watches each (key, grant): revoking A's grant locks A and only A; a new grant
#    for A's context restores it.
#  - rewrap to another key moves the grant: a new one there, the old one retired.
#  - shred retires the grant before it wipes; when the KMS fails it changes nothing, unless
#    --keep-grant, and the record says what became of the grant.
. "$(dirname "$0")/lib.sh"
HOST_ROLE=arn:aws:iam::111122223333:role/dmbyok-host
cleanup() {
	local rc=$?
	kill -9 "${AGENT:-}" 2>/dev/null || true
	[ "$rc" -eq 0 ] || release_suspended
}
trap cleanup EXIT

# A key whose policy gives the host everything a volume needs except Decrypt/ReEncrypt.
grant_only_key() {
	local policy
	policy=$(jq -nc --arg host "$HOST_ROLE" '{Version: "2012-10-17", Statement: [
		{Effect: "Allow", Principal: {AWS: "arn:aws:iam::111122223333:user/customer-admin"},
		 Action: "kms:*", Resource: "*"},
		{Effect: "Allow", Principal: {AWS: $host}, Resource: "*",
		 Action: ["kms:GenerateDataKey", "kms:CreateGrant", "kms:DescribeKey"]}]}')
	kms_as customer CreateKey "{\"Description\":\"per-volume grants\",\"Policy\":$(jq -Rs . <<<"$policy")}" |
		json_get KeyMetadata.Arn
}
grants_of() { kms_as customer ListGrants "{\"KeyId\":\"$1\"}" | jq -c '.Grants'; }
grant_count() { grants_of "$1" | jq length; }
token_grant() { token_json "$1" | jq -r '.grant_id // empty'; }
blank() { ! blkid -p "$1" >/dev/null 2>&1; }

step "KMS emulator; key K reaches this host through per-volume grants only"
start_kms
# The emulator answers STS too: GetCallerIdentity names this host, the grants' grantee.
export AWS_ENDPOINT_URL_STS=$KMS_URL
KEY=$(grant_only_key)
kms_as customer CreateAlias "{\"AliasName\":\"alias/k\",\"TargetKeyId\":\"$KEY\"}" >/dev/null
KEY2=$(grant_only_key)
echo "K  = $KEY"
echo "K2 = $KEY2"

step "bad input and KMS failures leave the disk blank and no grant behind"
expect_exit 2 "--grantee that is not an ARN" $DMBYOK format /dev/vda --key alias/k --grant --grantee bob
check "vda is still blank" blank /dev/vda
aws_fault '{"operation":"CreateGrant","fault":"internal","count":9}'
expect_exit 4 "CreateGrant failing (KMSInternalException)" $DMBYOK format /dev/vda --key alias/k --grant
check "it says so" grep -q "Cannot create the volume's grant: the KMS is unreachable or failing (KMSInternalException" "$WORK/err"
aws_clear_faults
check "vda is still blank" blank /dev/vda
check "and K has no grant" test "$(grant_count "$KEY")" = 0
# Without a grant the volume can be formatted (GenerateDataKey) but never opened.
check "format vdb without --grant" $DMBYOK format /dev/vdb --key alias/k --quiet
expect_exit 3 "without a grant this host cannot open it" $DMBYOK open /dev/vdb nogrant
expect_exit 3 "doctor on that volume fails too" $DMBYOK doctor /dev/vdb
check "it says the unwrap fails and this host has no access" bash -c "grep -q '^FAIL unwrap its data key' '$WORK/out' && grep -q '^FAIL where this host.s access comes from' '$WORK/out'"

step "format --grant: one grant per volume, bound to its context"
check "format vda --grant" $DMBYOK format /dev/vda --key alias/k --grant --quiet
check "format vdb --grant --force" $DMBYOK format /dev/vdb --key alias/k --grant --force --quiet
GA=$(token_grant /dev/vda)
GB=$(token_grant /dev/vdb)
check "each token records its grant id" bash -c "[ -n '$GA' ] && [ -n '$GB' ] && [ '$GA' != '$GB' ]"
check "dump shows it" bash -c "$DMBYOK dump /dev/vda | grep -q 'grant: *$GA'"
check "K has exactly these two grants" test "$(grants_of "$KEY" | jq -c 'map(.GrantId) | sort')" = "$(jq -nc --arg a "$GA" --arg b "$GB" '[$a, $b] | sort')"
G=$(grants_of "$KEY" | jq -c --arg id "$GA" '.[] | select(.GrantId == $id)')
check "grantee and retiring principal: this host" test "$(jq -r '.GranteePrincipal + " " + .RetiringPrincipal' <<<"$G")" = "$HOST_ROLE $HOST_ROLE"
check "operations: Decrypt, ReEncryptFrom, ReEncryptTo" test "$(jq -c '.Operations | sort' <<<"$G")" = '["Decrypt","ReEncryptFrom","ReEncryptTo"]'
check "constraint: EncryptionContextEquals = the volume's context" test "$(jq -cS .Constraints.EncryptionContextEquals <<<"$G")" = "$(token_json /dev/vda | jq -cS .context)"
check "named after the volume" test "$(jq -r .Name <<<"$G")" = "$(cryptsetup luksUUID /dev/vda)"
CTX_A=$(token_json /dev/vda | jq -c .context)
check "open vda as a" $DMBYOK open /dev/vda a --quiet
check "open vdb as b" $DMBYOK open /dev/vdb b --quiet
check "status names a's grant" test "$($DMBYOK status a --json | jq -r .grant_id)" = "$GA"
check "doctor /dev/vda" bash -c "$DMBYOK doctor /dev/vda >'$WORK/doctor' 2>&1"
cat "$WORK/doctor"
check "doctor: the unwrap works" grep -q '^ok   unwrap its data key' "$WORK/doctor"
# K's policy does not let this host list grants: doctor says it could not look.
check "doctor: its grant, not listed (no kms:ListGrants)" grep -q "^warn its grant .*$GA: not checked: this host may not kms:ListGrants" "$WORK/doctor"
check "doctor: the access comes from the grant only" grep -q "^ok   where this host's access comes from .*its grant $GA only" "$WORK/doctor"

step "dmbyokd watches each (key, grant): revoking A's grant locks A only"
start_agent --check-interval 1 --restore-interval 1 --debug
agent_grant() { $DMBYOK status "$1" --json | jq -r '.agent.grant_id'; }
check "the agent watches K through a's grant and b's" wait_quietly 30 eval "[ \"\$(agent_grant a) \$(agent_grant b)\" = '$GA $GB' ]"
check "both active" bash -c "[ \$($DMBYOK status a --json | jq -r .state) = active ] && [ \$($DMBYOK status b --json | jq -r .state) = active ]"
kms_as customer RevokeGrant "{\"KeyId\":\"$KEY\",\"GrantId\":\"$GA\"}" >/dev/null
# Locked, then torn down at once (nothing holds it open): either way, no key in the kernel.
agent_state() { $DMBYOK status "$1" --json 2>/dev/null | jq -r '.agent.state'; }
revoked_a() { [[ $(agent_state a) =~ ^(locked|torn-down)$ ]]; }
t=$(wait_for 30 revoked_a) || { grep -v -e "Control request" -e "POST " -e "KMS Decrypt" -e "KMS DescribeKey" -e "Decrypt attempt" -e "Decrypt failed" "$WORK/agent.log"; fail "a was not locked after its grant was revoked"; }
echo "A's grant revoked -> a locked (and torn down) in $t s"
check "no key of a in the kernel" bash -c "! dmsetup table a 2>/dev/null | grep -q ':logon:'"
# B's watch keeps answering OK after A's lock: count B's good probes from here.
probes_b() { $DMBYOK status b --json | jq -r '.agent.probes'; }
P0=$(probes_b)
check "b's watch keeps probing, and succeeding" wait_quietly 30 eval "[ \$(probes_b) -ge $((P0 + 3)) ] && [ \$($DMBYOK status b --json | jq -r .agent.last_probe_class) = ok ]"
check "b is still active" test "$(state b)" = active
check "the agent said whose grant it was" grep -q "Locking the 1 volume(s) of $KEY through grant $GA" "$WORK/agent.log"
NEW=$(kms_as customer CreateGrant "$(jq -nc --arg k "$KEY" --arg h "$HOST_ROLE" --argjson c "$CTX_A" \
	'{KeyId: $k, GranteePrincipal: $h, Operations: ["Decrypt","ReEncryptFrom","ReEncryptTo"], Constraints: {EncryptionContextEquals: $c}}')" | json_get GrantId)
t=$(wait_state a active 30) || { tail -n 40 "$WORK/agent.log"; fail "a was not restored by a new grant"; }
echo "a new grant for A's context -> a active in $t s"
kill "$AGENT"; wait "$AGENT" 2>/dev/null || true; AGENT=

step "rewrap to key K2 moves the grant"
check "close a" $DMBYOK close a --quiet
check "rewrap vda under K2" $DMBYOK rewrap /dev/vda --key "$KEY2" --quiet
GA2=$(token_grant /dev/vda)
check "the token names a new grant, on K2" test "$(grants_of "$KEY2" | jq -r '.[].GrantId')" = "$GA2"
check "K2's grant is bound to the same context" test "$(grants_of "$KEY2" | jq -cS '.[0].Constraints.EncryptionContextEquals')" = "$(jq -cS . <<<"$CTX_A")"
check "it opens under K2" $DMBYOK open /dev/vda a --quiet
check "close a" $DMBYOK close a --quiet
# The token's old grant (revoked above) was gone already; the customer's replacement stays.
check "on K only b's grant and the customer's replacement remain" test "$(grants_of "$KEY" | jq -c 'map(.GrantId) | sort')" = "$(jq -nc --arg a "$NEW" --arg b "$GB" '[$a, $b] | sort')"

step "shred retires the grant first; a KMS failure changes nothing"
check "close b" $DMBYOK close b --quiet
SUM=$(header_sum /dev/vdb)
aws_fault '{"operation":"RetireGrant","fault":"internal","count":9}'
expect_exit 4 "shred while RetireGrant fails" $DMBYOK shred /dev/vdb --yes
check "the header is unchanged" test "$(header_sum /dev/vdb)" = "$SUM"
check "and the grant is still there" test "$(grants_of "$KEY" | jq --arg b "$GB" 'map(select(.GrantId == $b)) | length')" = 1
aws_clear_faults
check "shred vdb" bash -c "$DMBYOK shred /dev/vdb --yes --json >'$WORK/shred-b.json'"
check "the record says: grant retired" test "$(jq -r '.grant.id + " " + .grant.outcome' "$WORK/shred-b.json")" = "$GB retired"
check "K no longer has b's grant" test "$(grants_of "$KEY" | jq --arg b "$GB" 'map(select(.GrantId == $b)) | length')" = 0
check "vdb has no LUKS header" bash -c "! cryptsetup isLuks /dev/vdb"
aws_fault '{"operation":"RetireGrant","fault":"internal","count":9}'
check "shred vda --keep-grant while RetireGrant fails" bash -c "$DMBYOK shred /dev/vda --yes --keep-grant --json >'$WORK/shred-a.json'"
check "the record says: grant kept" test "$(jq -r '.grant.id + " " + .grant.outcome' "$WORK/shred-a.json")" = "$GA2 kept"
check "vda has no LUKS header" bash -c "! cryptsetup isLuks /dev/vda"
aws_clear_faults

step "doctor warns when the key policy makes a volume's grant moot"
create_key alias/open >/dev/null # the default policy: the whole account, this host too
check "format vdb --grant under it" $DMBYOK format /dev/vdb --key alias/open --grant --quiet
check "doctor /dev/vdb (a warning is not a failure)" bash -c "$DMBYOK doctor /dev/vdb >'$WORK/doctor' 2>&1"
cat "$WORK/doctor"
check "doctor: the key policy lets this host in anyway" grep -q "^warn where this host's access comes from .*revoking its grant alone would not lock this volume" "$WORK/doctor"
check "doctor: its grant, as ListGrants shows it" grep -q "^ok   its grant .*$(token_grant /dev/vdb) for $HOST_ROLE, this volume's context only" "$WORK/doctor"
finish
