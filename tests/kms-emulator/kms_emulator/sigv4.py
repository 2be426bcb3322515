"""AWS Signature Version 4 verification of incoming KMS requests.

The expected signature is recomputed with botocore's own SigV4 signer
(botocore.auth.SigV4Auth) over a request rebuilt from what was received,
using exactly the headers the client listed in SignedHeaders and the client's
X-Amz-Date, then compared in constant time.  Works for the AWS CLI/SDKs and
for libcurl's CURLOPT_AWS_SIGV4 alike.
"""

import datetime
import hashlib
import hmac
import re
import sys
from collections import namedtuple

# botocore.compat probes for the AWS CRT (awscrt), an import that costs
# seconds in an emulated guest and is never used here: make it fail fast.
if "awscrt" not in sys.modules:
    sys.modules["awscrt"] = None

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.compat import HTTPHeaders  # noqa: E402

from .errors import KMSError  # noqa: E402

# What SigV4Auth reads from a credentials object (botocore.credentials is a
# heavy import, so it is not used).
Credentials = namedtuple("Credentials", "access_key secret_key token")

MAX_SKEW = datetime.timedelta(minutes=15)

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-fA-F]+)\s*$")


class _ReceivedRequestSigner(SigV4Auth):
    """SigV4Auth that signs exactly the header list the client declared."""

    def __init__(self, credentials, service, region, signed_names, headers):
        super().__init__(credentials, service, region)
        self._signed_names = signed_names
        self._received = headers

    def headers_to_sign(self, request):
        chosen = HTTPHeaders()
        for name in self._signed_names:
            for value in self._received.get_all(name) or []:
                chosen[name] = value
        return chosen


def _parse_amz_date(text):
    for fmt in ("%Y%m%dT%H%M%SZ", "%a, %d %b %Y %H:%M:%S GMT"):
        try:
            return datetime.datetime.strptime(text, fmt).replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            pass
    return None


def verify(method, raw_path, headers, body, principals, region, now=None,
           service="kms"):
    """Authenticate one request.

    `headers` is the http.client.HTTPMessage as received, `principals` maps
    access key id -> {"secret", "arn", "session_token"?, "expired"?, "expires"?}
    ("expires": epoch seconds, for temporary credentials from STS).
    Returns (access_key_id, principal dict); raises KMSError otherwise.
    """
    auth = headers.get("Authorization")
    if not auth:
        raise KMSError("MissingAuthenticationTokenException",
                       "Missing Authentication Token")
    match = _AUTH_RE.match(auth.strip())
    if not match:
        raise KMSError("IncompleteSignatureException",
                       "Authorization header requires 'Credential', "
                       "'Signature' and 'SignedHeaders' parameters and the "
                       "AWS4-HMAC-SHA256 algorithm.")
    scope = match.group("cred").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise KMSError("IncompleteSignatureException",
                       "Credential should be of the form "
                       "AKID/date/region/service/aws4_request.")
    access_key, scope_date, scope_region, scope_service, _ = scope

    principal = principals.get(access_key)
    if principal is None:
        raise KMSError("UnrecognizedClientException",
                       "The security token included in the request is invalid.")
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    if principal.get("expired") or (
            "expires" in principal and principal["expires"] <= moment.timestamp()):
        raise KMSError("ExpiredTokenException",
                       "The security token included in the request is expired")
    expected_token = principal.get("session_token")
    sent_token = headers.get("X-Amz-Security-Token")
    if (expected_token or sent_token) and not hmac.compare_digest(
            (expected_token or "").encode(), (sent_token or "").encode()):
        raise KMSError("UnrecognizedClientException",
                       "The security token included in the request is invalid.")

    if scope_service != service:
        raise KMSError("InvalidSignatureException",
                       f"Credential should be scoped to correct service: '{service}'. ")
    if scope_region != region:
        raise KMSError("InvalidSignatureException",
                       f"Credential should be scoped to a valid region, "
                       f"not '{scope_region}'. ")

    signed_names = match.group("signed").lower().split(";")
    if "host" not in signed_names:
        raise KMSError("InvalidSignatureException",
                       "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    stamp_text = headers.get("X-Amz-Date") or headers.get("Date") or ""
    stamp = _parse_amz_date(stamp_text.strip())
    if stamp is None:
        raise KMSError("IncompleteSignatureException",
                       "Authorization header requires existence of either a "
                       "'X-Amz-Date' or a 'Date' header.")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if abs(now - stamp) > MAX_SKEW:
        raise KMSError("InvalidSignatureException",
                       f"Signature expired: {stamp:%Y%m%dT%H%M%SZ} is now earlier "
                       f"than {now - MAX_SKEW:%Y%m%dT%H%M%SZ} "
                       f"({now:%Y%m%dT%H%M%SZ} - 15 min.)"
                       if stamp < now else
                       f"Signature not yet current: {stamp:%Y%m%dT%H%M%SZ} is "
                       f"still later than {now + MAX_SKEW:%Y%m%dT%H%M%SZ} "
                       f"({now:%Y%m%dT%H%M%SZ} + 15 min.)")
    timestamp = stamp.strftime("%Y%m%dT%H%M%SZ")
    if scope_date != timestamp[:8]:
        raise KMSError("InvalidSignatureException",
                       "Date in Credential scope does not match YYYYMMDD from "
                       "ISO-8601 version of date from HTTP")

    # A client that sends X-Amz-Content-SHA256 signs that value instead of
    # hashing the body; make sure it really is the body's hash.
    declared = headers.get("X-Amz-Content-SHA256")
    if declared and declared != hashlib.sha256(body).hexdigest():
        raise KMSError("InvalidSignatureException",
                       "The provided 'x-amz-content-sha256' header does not "
                       "match what was computed.")

    host = headers.get("Host", "localhost")
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}",
                         data=body)
    request.context["timestamp"] = timestamp
    if declared and "x-amz-content-sha256" in signed_names:
        request.headers["X-Amz-Content-SHA256"] = declared
    signer = _ReceivedRequestSigner(
        Credentials(access_key, principal.get("secret", ""), expected_token),
        scope_service, scope_region, signed_names, headers)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match.group("sig").lower()):
        raise KMSError("InvalidSignatureException",
                       "The request signature we calculated does not match the "
                       "signature you provided. Check your AWS Secret Access Key "
                       "and signing method. Consult the service documentation "
                       "for details.")
    return access_key, principal
