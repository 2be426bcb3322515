"""AWS STS, as much as credential chains need: AssumeRole,
AssumeRoleWithWebIdentity and GetCallerIdentity over the Query API
(form-encoded POST, XML answers).

Roles live in the state file ("roles"), created through the control API.
Temporary credentials are ordinary principals (access key id ASIA...) with a
session token and an "expires" time; KMS and STS both reject them with
ExpiredTokenException / ExpiredToken once that time has passed.
"""

import base64
import binascii
import datetime
import json
import re
import secrets
import string
import time
from xml.sax.saxutils import escape

from . import ACCOUNT_ID

NS = "https://sts.amazonaws.com/doc/2011-06-15/"
VERSION = "2011-06-15"
_SESSION_NAME_RE = re.compile(r"[\w+=,.@-]{2,64}")
_ROLE_NAME_RE = re.compile(r"[\w+=,.@-]{1,64}")
# Temporary principals this long past expiry are dropped from the state file.
_PRUNE_AFTER = 3600

# STS error codes and their HTTP statuses (the Query protocol's awsQueryError).
_STATUS = {
    "AccessDenied": 403,
    "InvalidClientTokenId": 403,
    "SignatureDoesNotMatch": 403,
    "MissingAuthenticationToken": 403,
    "IncompleteSignature": 400,
    "ExpiredToken": 400,
    "ExpiredTokenException": 400,
    "InvalidIdentityToken": 400,
    "ValidationError": 400,
    "InvalidAction": 400,
    "MalformedPolicyDocument": 400,
}

# KMS-flavoured authentication errors from sigv4.verify -> STS's own codes.
FROM_KMS = {
    "UnrecognizedClientException": "InvalidClientTokenId",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "ExpiredTokenException": "ExpiredToken",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
}


class STSError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self):
        return _STATUS.get(self.code, 400)

    def body(self, request_id):
        kind = "Receiver" if self.status >= 500 else "Sender"
        return (f'<ErrorResponse xmlns="{NS}">\n  <Error>\n    <Type>{kind}</Type>\n'
                f"    <Code>{escape(self.code)}</Code>\n"
                f"    <Message>{escape(self.message)}</Message>\n  </Error>\n"
                f"  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n")


def default_sts_config():
    # AWS: DurationSeconds 900..MaxSessionDuration, default 3600. Tests may
    # lower both to watch credentials expire.
    return {"default_duration": 3600, "min_duration": 900}


def role_arn(name):
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"


def _random_id(prefix, n=16):
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def create_role(txn, spec):
    """Control API: {"RoleName", "TrustedPrincipals": [ARN|account|"*"],
    "WebIdentity": bool, "MaxSessionDuration": seconds}."""
    name = spec.get("RoleName") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not _ROLE_NAME_RE.fullmatch(name):
        raise STSError("ValidationError", "RoleName is required ([\\w+=,.@-]{1,64})")
    trusted = spec.get("TrustedPrincipals", [])
    if isinstance(trusted, str):
        trusted = [trusted]
    if not isinstance(trusted, list) or not all(isinstance(p, str) for p in trusted):
        raise STSError("ValidationError", "TrustedPrincipals must be a list of strings")
    max_duration = spec.get("MaxSessionDuration", 3600)
    if not isinstance(max_duration, int) or not 1 <= max_duration <= 43200:
        raise STSError("ValidationError", "MaxSessionDuration must be 1..43200")
    role = {"arn": role_arn(name), "role_id": _random_id("AROA"),
            "trusted_principals": trusted,
            "web_identity": bool(spec.get("WebIdentity", False)),
            "max_session_duration": max_duration}
    txn.data.setdefault("roles", {})[name] = role
    txn.dirty = True
    return {"Role": {"RoleName": name, **role}}


def configure(txn, spec):
    """Control API: {"DefaultDurationSeconds": N, "MinDurationSeconds": N}."""
    config = txn.data.setdefault("sts", default_sts_config())
    for field, key in (("DefaultDurationSeconds", "default_duration"),
                       ("MinDurationSeconds", "min_duration")):
        if field in spec:
            value = spec[field]
            if not isinstance(value, int) or value < 1:
                raise STSError("ValidationError", f"{field} must be a positive integer")
            config[key] = value
    txn.dirty = True
    return {"sts": config}


def sessions(txn, session_name=None):
    """Control API: the temporary credentials handed out (tests only)."""
    out = []
    for akid, p in txn.data["principals"].items():
        if "expires" not in p:
            continue
        if session_name and p.get("session_name") != session_name:
            continue
        out.append({"AccessKeyId": akid, "SecretAccessKey": p["secret"],
                    "SessionToken": p["session_token"], "Arn": p["arn"],
                    "Expiration": _iso(p["expires"])})
    return {"Sessions": out}


def _iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _account_of(arn):
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def session_role_arn(principal_arn):
    """arn:aws:sts::ACCT:assumed-role/ROLE/SESSION -> the role's IAM ARN."""
    m = re.fullmatch(r"arn:aws:sts::(\d+):assumed-role/([^/]+)/[^/]+", principal_arn)
    return f"arn:aws:iam::{m.group(1)}:role/{m.group(2)}" if m else None


def _trusts(role, caller_arn):
    for entry in role.get("trusted_principals", []):
        if entry in ("*", caller_arn):
            return True
        if entry == _account_of(caller_arn) or (
                entry.endswith(":root") and _account_of(entry) == _account_of(caller_arn)):
            return True
        if entry == session_role_arn(caller_arn):
            return True
    return False


def _find_role(txn, arn, caller, action):
    m = re.fullmatch(r"arn:aws:iam::(\d{12}):role/(?:[^/]+/)*([^/]+)", arn or "")
    role = txn.data.get("roles", {}).get(m.group(2)) if m else None
    if role is None or role["arn"] != arn:
        raise STSError("AccessDenied", f"User: {caller} is not authorized to perform: "
                       f"sts:{action} on resource: {arn}")
    return role


def _duration(txn, params, role):
    config = txn.data.get("sts") or default_sts_config()
    text = params.get("DurationSeconds")
    if text is None:
        return min(config["default_duration"], role["max_session_duration"])
    if not text.isdigit():
        raise STSError("ValidationError", "DurationSeconds must be an integer")
    value = int(text)
    if value < config["min_duration"]:
        raise STSError("ValidationError",
                       f"1 validation error detected: Value '{value}' at "
                       "'durationSeconds' failed to satisfy constraint: Member must "
                       f"have value greater than or equal to {config['min_duration']}")
    if value > role["max_session_duration"]:
        raise STSError("ValidationError", "The requested DurationSeconds exceeds the "
                       "MaxSessionDuration set for this role.")
    return value


def _session_name(params):
    name = params.get("RoleSessionName")
    if name is None or not _SESSION_NAME_RE.fullmatch(name):
        raise STSError("ValidationError",
                       "1 validation error detected: Value at 'roleSessionName' failed "
                       "to satisfy constraint: Member must satisfy regular expression "
                       "pattern: [\\w+=,.@-]* and length 2..64")
    return name


def _issue(txn, role, name, duration, source):
    now = time.time()
    principals = txn.data["principals"]
    for akid in [a for a, p in principals.items()
                 if "expires" in p and p["expires"] + _PRUNE_AFTER < now]:
        del principals[akid]
    akid = _random_id("ASIA")
    secret = base64.b64encode(secrets.token_bytes(30)).decode()
    token = base64.b64encode(secrets.token_bytes(240)).decode()
    arn = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role['arn'].rsplit('/', 1)[1]}/{name}"
    expires = int(now) + duration
    principals[akid] = {"secret": secret, "session_token": token, "arn": arn,
                        "expires": expires, "session_name": name,
                        "user_id": f"{role['role_id']}:{name}", "source": source}
    txn.dirty = True
    return (f"    <Credentials>\n      <AccessKeyId>{akid}</AccessKeyId>\n"
            f"      <SecretAccessKey>{secret}</SecretAccessKey>\n"
            f"      <SessionToken>{token}</SessionToken>\n"
            f"      <Expiration>{_iso(expires)}</Expiration>\n    </Credentials>\n"
            f"    <AssumedRoleUser>\n      <AssumedRoleId>{role['role_id']}:{escape(name)}"
            f"</AssumedRoleId>\n      <Arn>{escape(arn)}</Arn>\n    </AssumedRoleUser>\n")


def _wrap(action, result, request_id):
    return (f'<{action}Response xmlns="{NS}">\n  <{action}Result>\n{result}'
            f"  </{action}Result>\n  <ResponseMetadata>\n"
            f"    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n"
            f"</{action}Response>\n")


def _jwt_claims(token):
    """The payload of a JWT-like token, or {} (signatures are not checked)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def assume_role(txn, params, caller_arn, request_id):
    name = _session_name(params)
    role = _find_role(txn, params.get("RoleArn"), caller_arn, "AssumeRole")
    if not _trusts(role, caller_arn):
        raise STSError("AccessDenied", f"User: {caller_arn} is not authorized to "
                       f"perform: sts:AssumeRole on resource: {role['arn']}")
    duration = _duration(txn, params, role)
    body = _issue(txn, role, name, duration, caller_arn)
    return _wrap("AssumeRole", body, request_id)


def assume_role_with_web_identity(txn, params, request_id):
    name = _session_name(params)
    token = params.get("WebIdentityToken") or ""
    if len(token.strip()) < 4:
        raise STSError("ValidationError", "1 validation error detected: Value at "
                       "'webIdentityToken' failed to satisfy constraint: Member must "
                       "have length greater than or equal to 4")
    role = _find_role(txn, params.get("RoleArn"), "web-identity",
                      "AssumeRoleWithWebIdentity")
    if not role.get("web_identity"):
        raise STSError("AccessDenied", "Not authorized to perform "
                       "sts:AssumeRoleWithWebIdentity")
    claims = _jwt_claims(token)
    duration = _duration(txn, params, role)
    body = _issue(txn, role, name, duration, "web-identity")
    subject = str(claims.get("sub", "web-identity-subject"))
    audience = str(claims.get("aud", "sts.amazonaws.com"))
    body += (f"    <SubjectFromWebIdentityToken>{escape(subject)}"
             f"</SubjectFromWebIdentityToken>\n    <Audience>{escape(audience)}</Audience>\n"
             f"    <Provider>{escape(str(claims.get('iss', 'web-identity')))}</Provider>\n")
    return _wrap("AssumeRoleWithWebIdentity", body, request_id)


def get_caller_identity(principal, access_key, request_id):
    arn = principal["arn"]
    body = (f"    <Arn>{escape(arn)}</Arn>\n"
            f"    <UserId>{escape(principal.get('user_id', access_key))}</UserId>\n"
            f"    <Account>{_account_of(arn)}</Account>\n")
    return _wrap("GetCallerIdentity", body, request_id)
