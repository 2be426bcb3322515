"""Access tokens: bearer-token authentication, the OAuth 2.0 token endpoint's JWT bearer
grant for service accounts (RFC 7523, as oauth2.googleapis.com/token does it), the GCE
metadata server's tokens, and service-account JSON keys.
"""

import base64
import json
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import GoogleError

# Audiences Google's token endpoint accepts besides its own URL (the emulator's here).
GOOGLE_AUDIENCES = ("https://oauth2.googleapis.com/token",
                    "https://www.googleapis.com/oauth2/v4/token",
                    "https://accounts.google.com/o/oauth2/token")
GRANT_JWT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access "
                   "token, login cookie or other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.")
MISSING = ("Request is missing required authentication credential. Expected OAuth 2 access "
           "token, login cookie or other valid authentication credential. See "
           "https://developers.google.com/identity/sign-in/web/devconsole-project.")


class OAuthError(Exception):
    """A token endpoint error: {"error": code, "error_description": text}."""

    def __init__(self, code, description, status=400):
        super().__init__(description)
        self.code, self.description, self.status = code, description, status

    def body(self):
        return {"error": self.code, "error_description": self.description}


def authenticate(data, authorization):
    """The principal a request's Authorization header names, or UNAUTHENTICATED."""
    if not authorization:
        raise GoogleError("UNAUTHENTICATED", MISSING)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GoogleError("UNAUTHENTICATED", UNAUTHENTICATED)
    entry = data["tokens"].get(token.strip())
    if entry is None or (entry.get("expires") is not None and entry["expires"] <= time.time()):
        raise GoogleError("UNAUTHENTICATED", UNAUTHENTICATED)
    return entry["principal"]


def issue(data, principal, source):
    """A fresh access token for principal; prunes tokens expired over an hour ago."""
    now = time.time()
    data["tokens"] = {t: e for t, e in data["tokens"].items()
                      if e.get("expires") is None or e.get("issued_by") is None
                      or e["expires"] > now - 3600}
    token = "ya29.emu-" + secrets.token_urlsafe(48)
    lifetime = int(data.get("token_lifetime", 3599))
    data["tokens"][token] = {"principal": principal, "expires": now + lifetime,
                             "issued_by": source}
    return {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}


def create_key(data, email, token_uri):
    """A new key of a service account, as the JSON key file Google hands out."""
    account = data["service_accounts"].get(email)
    if account is None:
        raise GoogleError("NOT_FOUND", f"Service account {email} does not exist.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = secrets.token_hex(20)
    account["keys"][kid] = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    project = email.split("@", 1)[1].split(".", 1)[0]
    return {"type": "service_account", "project_id": project, "private_key_id": kid,
            "private_key": pem, "client_email": email, "client_id": str(10 ** 20 + len(kid)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                    + email.replace("@", "%40"),
            "universe_domain": "googleapis.com"}


def _b64url(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_bearer_grant(data, form, token_uri):
    """Exchange a service account's signed JWT for an access token."""
    if form.get("grant_type") != GRANT_JWT:
        raise OAuthError("unsupported_grant_type",
                         "Invalid grant_type: " + (form.get("grant_type") or ""))
    assertion = form.get("assertion") or ""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError("invalid_request", "Invalid JWT: malformed.")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, TypeError):
        raise OAuthError("invalid_request", "Invalid JWT: malformed.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError("invalid_request", "Invalid JWT: malformed.")
    if header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    account = data["service_accounts"].get(claims.get("iss"))
    if account is None:
        raise OAuthError("invalid_grant", "Invalid grant: account not found")
    kid = header.get("kid")
    candidates = [account["keys"][kid]] if kid in account["keys"] else (
        [] if kid else list(account["keys"].values()))
    signed = (parts[0] + "." + parts[1]).encode()
    for pem in candidates:
        public = serialization.load_pem_public_key(pem.encode())
        try:
            public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            break
        except InvalidSignature:
            continue
    else:
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    if claims.get("aud") not in (token_uri,) + GOOGLE_AUDIENCES:
        raise OAuthError("invalid_grant",
                         "Invalid JWT: Failed audience check. The right audience is "
                         + token_uri + f" (got {claims.get('aud')!r})")
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (not isinstance(iat, int) or not isinstance(exp, int) or exp <= now
            or iat > now + 300 or exp - iat > 3600 or exp <= iat):
        raise OAuthError("invalid_grant",
                         "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                         "in a reasonable timeframe. Check your iat and exp values in the "
                         "JWT claim.")
    if not claims.get("scope") and not claims.get("target_audience"):
        raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience "
                         "provided.")
    return issue(data, "serviceAccount:" + claims["iss"], "jwt-bearer")
