"""Key policies and grants: who may do what with a key.

Evaluation follows AWS for a key in the caller's own account, simplified:
  1. an applicable Deny statement in the key policy -> AccessDeniedException;
  2. an applicable Allow statement, or a grant to the caller for the
     operation whose constraints hold -> allowed;
  3. otherwise -> AccessDeniedException.
IAM identity policies are not modelled: the default statement that names the
account root ("enable IAM policies") is taken to allow every principal of the
account, as if each had an IAM policy granting kms:*.  Conditions support the
String* operators on kms:EncryptionContext:<key>, kms:CallerAccount and
aws:PrincipalArn; a statement with any other condition never applies.
"""

import fnmatch
import json

from .errors import KMSError


def default_policy(account_id):
    return json.dumps({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }],
    }, indent=2)


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse(text):
    """Parse and sanity-check a policy document; MalformedPolicyDocument if bad."""
    def bad(why):
        return KMSError("MalformedPolicyDocumentException", why)
    try:
        doc = json.loads(text)
    except ValueError:
        raise bad("The policy is not valid JSON.") from None
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise bad("Policy contains no statements.")
    statements = _as_list(doc["Statement"])
    if not statements:
        raise bad("Policy contains no statements.")
    for st in statements:
        if not isinstance(st, dict):
            raise bad("Policy contains a statement that is not an object.")
        if st.get("Effect") not in ("Allow", "Deny"):
            raise bad("Policy contains a statement with an invalid Effect.")
        if "Principal" not in st:
            raise bad("Policy contains a statement with no principal.")
        if "Action" not in st and "NotAction" not in st:
            raise bad("Policy contains a statement with no action.")
    return doc


def _account_of(arn):
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def _session_role(principal_arn):
    """An assumed-role session ARN stands for its role, as in AWS policies."""
    parts = principal_arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")
        if len(role) == 3:
            return f"arn:aws:iam::{parts[4]}:role/{role[1]}"
    return None


def _principal_matches(spec, principal_arn):
    if spec == "*":
        return True
    if not isinstance(spec, dict):
        return False
    for entry in _as_list(spec.get("AWS")):
        if entry == "*" or entry == principal_arn:
            return True
        if entry == _session_role(principal_arn):
            return True
        # "ACCOUNT" and "arn:aws:iam::ACCOUNT:root" stand for the account.
        if entry == _account_of(principal_arn):
            return True
        if entry.endswith(":root") and _account_of(entry) == _account_of(principal_arn):
            return True
    return False


def _matches_any(patterns, value):
    value = value.lower()
    return any(fnmatch.fnmatchcase(value, str(p).lower()) for p in patterns)


def _condition_holds(condition, request):
    """Minimal IAM condition support; unknown operators or keys never hold."""
    for operator, tests in (condition or {}).items():
        if not isinstance(tests, dict):
            return False
        for key, wanted in tests.items():
            actual = request.get(key.lower())
            wanted = [str(w) for w in _as_list(wanted)]
            if operator == "StringEquals":
                ok = actual is not None and actual in wanted
            elif operator == "StringNotEquals":
                ok = actual is None or actual not in wanted
            elif operator == "StringEqualsIgnoreCase":
                ok = actual is not None and actual.lower() in [w.lower() for w in wanted]
            elif operator == "StringLike":
                ok = actual is not None and any(
                    fnmatch.fnmatchcase(actual, w) for w in wanted)
            elif operator == "StringNotLike":
                ok = actual is None or not any(
                    fnmatch.fnmatchcase(actual, w) for w in wanted)
            else:
                return False
            if not ok:
                return False
    return True


def evaluate(doc, principal_arn, action, key_arn, context):
    """'Deny', 'Allow' or None for one request against one policy document."""
    request = {"kms:calleraccount": _account_of(principal_arn),
               "aws:principalarn": principal_arn}
    for name, value in (context or {}).items():
        request[f"kms:encryptioncontext:{name}".lower()] = value
    verdict = None
    for st in _as_list(doc.get("Statement")):
        if not _principal_matches(st.get("Principal"), principal_arn):
            continue
        if "Action" in st:
            if not _matches_any(_as_list(st["Action"]), action):
                continue
        elif _matches_any(_as_list(st.get("NotAction")), action):
            continue
        if "Resource" in st and not _matches_any(_as_list(st["Resource"]), key_arn):
            continue
        if not _condition_holds(st.get("Condition"), request):
            continue
        if st["Effect"] == "Deny":
            return "Deny"
        verdict = "Allow"
    return verdict


# The grant operations that take an encryption context: only these are bound by a
# grant's EncryptionContextEquals/Subset (AWS: "Grants with grant constraints can
# include the DescribeKey and RetireGrant operations, but the constraint doesn't
# apply to these operations"; CreateGrant has its own rule, below).
CONTEXT_OPERATIONS = frozenset((
    "Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom", "ReEncryptTo"))


def is_principal(named_arn, principal_arn):
    """Whether a grant's principal names the caller: itself, or its session's role."""
    return named_arn is not None and (
        named_arn == principal_arn or named_arn == _session_role(principal_arn))


def _folded(context):
    # AWS: in a grant constraint the keys are not case sensitive, the values are.
    return {k.lower(): v for k, v in (context or {}).items()}


def constraints_hold(constraints, context):
    """Whether an encryption context satisfies a grant's constraints."""
    constraints = constraints or {}
    context = _folded(context)
    equals = constraints.get("EncryptionContextEquals")
    if equals is not None and _folded(equals) != context:
        return False
    subset = constraints.get("EncryptionContextSubset")
    if subset is not None and any(context.get(k) != v
                                  for k, v in _folded(subset).items()):
        return False
    return True


def constraints_as_strict(new, parent):
    """AWS: a grant created through a constrained grant's CreateGrant needs "an
    equally strict or stricter encryption context constraint"."""
    parent, new = parent or {}, new or {}
    p_equals, p_subset = parent.get("EncryptionContextEquals"), parent.get(
        "EncryptionContextSubset")
    n_equals, n_subset = new.get("EncryptionContextEquals"), new.get(
        "EncryptionContextSubset")
    if p_equals is not None:
        return n_equals is not None and _folded(n_equals) == _folded(p_equals)
    if p_subset is not None:
        narrowed = n_equals if n_equals is not None else n_subset
        return narrowed is not None and all(
            _folded(narrowed).get(k) == v for k, v in _folded(p_subset).items())
    return True


def grant_allows(grant, principal_arn, operation, context, new_constraints=None):
    """True if `grant` lets `principal_arn` call `operation` with `context`
    (for CreateGrant: create a grant with `new_constraints`)."""
    if not is_principal(grant.get("GranteePrincipal"), principal_arn):
        return False
    if operation not in grant.get("Operations", []):
        return False
    if operation == "CreateGrant":
        return constraints_as_strict(new_constraints, grant.get("Constraints"))
    if operation not in CONTEXT_OPERATIONS:
        return True
    return constraints_hold(grant.get("Constraints"), context)


def authorize(policy_text, grants, principal_arn, operation, key_arn, context=None,
              new_constraints=None):
    """Raise AccessDeniedException unless the caller may run `operation`."""
    action = f"kms:{operation}"
    try:
        verdict = evaluate(json.loads(policy_text), principal_arn, action,
                           key_arn, context)
    except ValueError:
        verdict = None
    if verdict == "Deny":
        raise KMSError("AccessDeniedException",
                       f"User: {principal_arn} is not authorized to perform: "
                       f"{action} on resource: {key_arn} with an explicit deny "
                       "in a resource-based policy")
    if verdict == "Allow":
        return
    if any(grant_allows(g, principal_arn, operation, context, new_constraints)
           for g in grants):
        return
    raise KMSError("AccessDeniedException",
                   f"User: {principal_arn} is not authorized to perform: "
                   f"{action} on resource: {key_arn} because no resource-based "
                   f"policy allows the {action} action")
