"""Microsoft Entra ID as Key Vault's clients meet it: the v2.0 token endpoint's
client-credentials grant (client secret, certificate client assertion with x5t, federated
workload-identity assertion), OpenID metadata and instance discovery (what MSAL reads), the
instance metadata service's managed-identity tokens, and Key Vault's bearer check with its
401 challenge.
"""

import base64
import datetime
import hashlib
import json
import secrets
import time
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import FEDERATED_AUDIENCE, FEDERATED_ISSUER, KvError

LOGIN = "https://login.microsoftonline.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class EntraError(Exception):
    """A token endpoint error: {"error", "error_description": "AADSTSn: ...", ...}."""

    def __init__(self, status, error, number, text):
        super().__init__(text)
        self.status, self.error, self.number, self.text = status, error, number, text

    def body(self):
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        return {"error": self.error,
                "error_description": f"AADSTS{self.number}: {self.text}\r\nTrace ID: {trace}"
                                     f"\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}",
                "error_codes": [self.number], "timestamp": stamp, "trace_id": trace,
                "correlation_id": corr,
                "error_uri": f"{LOGIN}/error?code={self.number}"}


def resource_of_host(host):
    """The audience a vault host takes: https://vault.REST for NAME.vault.REST (Azure's
    clouds, the sovereign ones, Azure Stack Hub's vault.REGION.FQDN), likewise for
    NAME.managedhsm.REST; https://vault.azure.net for any other name (an address)."""
    name = host.lower()
    head, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        name = head
    labels = name.split(".")
    if len(labels) >= 3 and labels[1] in ("vault", "managedhsm") and all(labels):
        return "https://" + ".".join(labels[1:])
    return "https://vault.azure.net"


def challenge(data, host):
    """Key Vault's WWW-Authenticate: its tenant's authority and the vault's audience, unless
    a test made the vault name others (the control API's "challenge")."""
    override = data["vaults"].get(host.lower(), {}).get("challenge") or {}
    tenant = override.get("tenant") or data["tenant"]
    resource = override.get("resource") or resource_of_host(host)
    return ("WWW-Authenticate", f'Bearer authorization="{LOGIN}/{tenant}", '
                                f'resource="{resource}"')


def issue(data, oid, appid, resource, source):
    now = time.time()
    data["tokens"] = {t: e for t, e in data["tokens"].items()
                      if e.get("expires") is None or e["expires"] > now - 3600}
    token = "eyJ0eXAiOiJKV1Qi.emu-" + secrets.token_urlsafe(48)
    lifetime = int(data.get("token_lifetime", 3599))
    data["tokens"][token] = {"oid": oid, "appid": appid, "resource": resource,
                             "expires": now + lifetime, "issued_by": source}
    return token, lifetime


def authenticate(data, authorization, host):
    """The caller {"oid", "appid"} of a Key Vault request, or 401 with the challenge."""
    hdr = [challenge(data, host)]
    if not authorization:
        raise KvError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP "
                      "token.", headers=hdr)
    scheme, _, token = authorization.partition(" ")
    entry = data["tokens"].get(token.strip()) if scheme.lower() == "bearer" else None
    if entry is None:
        raise KvError(401, "Unauthorized", "[BearerReadAccessTokenFailed] Error validating "
                      "token: 'S2S12005'.", headers=hdr)
    if entry.get("expires") is not None and entry["expires"] <= time.time():
        raise KvError(401, "Unauthorized", "[TokenExpired] Error validating token: "
                      "'S2S12086'.", headers=hdr)
    want = resource_of_host(host)
    if entry["resource"] not in ("*", want, want + "/"):
        raise KvError(401, "Unauthorized", f"AKV10022: Invalid audience. Expected {want}, "
                      f"found: {entry['resource']}.", headers=hdr)
    return {"oid": entry["oid"], "appid": entry.get("appid")}


def _numeric(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _verify(public_pem, parts):
    public = serialization.load_pem_public_key(public_pem.encode())
    signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    public.verify(signature, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(),
                  hashes.SHA256())


def issuer_key(data):
    """The private key of the emulated OIDC issuer of federated tokens (made once)."""
    if data.get("issuer_key") is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data["issuer_key"] = key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode()
    return serialization.load_pem_private_key(data["issuer_key"].encode(), None)


def federated_token(data, subject, lifetime=3600):
    """A projected service-account token as Kubernetes' issuer signs it."""
    key = issuer_key(data)
    now = int(time.time())
    head = _b64url(json.dumps({"alg": "RS256", "kid": "emu", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iss": FEDERATED_ISSUER, "sub": subject,
                                 "aud": [FEDERATED_AUDIENCE], "iat": now, "nbf": now,
                                 "exp": now + lifetime}).encode())
    sig = key.sign((head + "." + claims).encode(), padding.PKCS1v15(), hashes.SHA256())
    return head + "." + claims + "." + _b64url(sig)


def register_certificate(data, app_id, cert_pem):
    """Registers an app's certificate credential; returns its x5t."""
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    x5t = _b64url(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())
    data["apps"][app_id]["certificates"][x5t] = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return x5t


def _assertion(data, app_id, app, assertion, token_url):
    parts = assertion.split(".")
    try:
        header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
        assert len(parts) == 3 and isinstance(header, dict) and isinstance(claims, dict)
    except Exception:  # noqa: BLE001 - any malformed JWT is the same error
        raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.") \
            from None
    now = time.time()
    if header.get("alg") != "RS256":
        raise EntraError(401, "invalid_client", 5002738,
                         f"Invalid JWT token. '{header.get('alg')}' is not a supported "
                         "signature algorithm.")
    if claims.get("iss") == FEDERATED_ISSUER:
        try:
            _verify(issuer_key(data).public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo).decode(), parts)
        except InvalidSignature:
            raise EntraError(401, "invalid_client", 700027, "Client assertion failed "
                             "signature validation.") from None
        aud = claims.get("aud")
        aud = aud if isinstance(aud, list) else [aud]
        if not any(f["issuer"] == claims.get("iss") and f["subject"] == claims.get("sub")
                   and f["audience"] in aud for f in app["federated"]):
            raise EntraError(400, "invalid_request", 70021,
                             "No matching federated identity record found for presented "
                             f"assertion. Assertion Issuer: '{claims.get('iss')}'. Assertion "
                             f"Subject: '{claims.get('sub')}'.")
        if not _numeric(claims.get("exp")) or claims["exp"] <= now:
            raise EntraError(400, "invalid_client", 700024,
                             "Client assertion is not within its valid time range.")
        return "workload-identity"
    # MSAL pads its x5t ("...=") and Entra does not mind: compare without padding.
    x5t = str(header.get("x5t") or "").rstrip("=").replace("+", "-").replace("/", "_")
    pem = app["certificates"].get(x5t)
    if pem is None:
        raise EntraError(401, "invalid_client", 700027,
                         f"The certificate with identifier used to sign the client assertion "
                         f"is not registered on application. [Reason - The key was not found., "
                         f"Thumbprint of key used by client: '{header.get('x5t')}'.")
    try:
        _verify(pem, parts)
    except InvalidSignature:
        raise EntraError(401, "invalid_client", 700027,
                         "Client assertion failed signature validation.") from None
    if claims.get("aud") not in (token_url,) and not str(claims.get("aud")).endswith(
            f"/{data['tenant']}/oauth2/v2.0/token"):
        raise EntraError(401, "invalid_client", 700212,
                         f"No matching federated identity record found for presented "
                         f"assertion audience '{claims.get('aud')}'.")
    if claims.get("iss") != app_id or claims.get("sub") != app_id:
        raise EntraError(401, "invalid_client", 700023,
                         "Client assertion audience claim does not match Realm issuer.")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    # NumericDate: JSON numbers, fractions allowed (MSAL sends floats).
    if not _numeric(exp) or exp <= now or not _numeric(nbf) or nbf > now + 300:
        raise EntraError(400, "invalid_client", 700024,
                         "Client assertion is not within its valid time range.")
    return "client-certificate"


def token_grant(data, tenant, form, token_url):
    """The v2.0 token endpoint's client-credentials grant."""
    if tenant.lower() not in (data["tenant"], "dmbyok-test.onmicrosoft.com"):
        raise EntraError(400, "invalid_request", 90002,
                         f"Tenant '{tenant}' not found. Check to make sure you have the "
                         "correct tenant ID and are signing into the correct cloud.")
    if form.get("grant_type") != "client_credentials":
        raise EntraError(400, "unsupported_grant_type", 70003,
                         "The app requested an unsupported grant type "
                         f"'{form.get('grant_type')}'.")
    app_id = form.get("client_id") or ""
    app = data["apps"].get(app_id)
    if app is None:
        raise EntraError(400, "unauthorized_client", 700016,
                         f"Application with identifier '{app_id}' was not found in the "
                         f"directory '{data['tenant']}'. This can happen if the application "
                         "has not been installed by the administrator of the tenant or "
                         "consented to by any user in the tenant.")
    scope = form.get("scope") or ""
    if not scope:
        raise EntraError(400, "invalid_request", 900144, "The request body must contain the "
                         "following parameter: 'scope'.")
    if not scope.endswith("/.default") or " " in scope:
        raise EntraError(400, "invalid_scope", 1002012,
                         f"The provided value for scope {scope} is not valid. Client "
                         "credential flows must have a scope value with /.default suffixed "
                         "to the resource identifier (application ID URI).")
    if form.get("client_secret") is not None:
        if form["client_secret"] not in app["secrets"]:
            raise EntraError(401, "invalid_client", 7000215,
                             "Invalid client secret provided. Ensure the secret being sent in "
                             "the request is the client secret value, not the client secret "
                             f"ID, for a secret added to app '{app_id}'.")
        source = "client-secret"
    elif form.get("client_assertion") is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise EntraError(400, "invalid_request", 50027,
                             "Invalid client_assertion_type.")
        source = _assertion(data, app_id, app, form["client_assertion"], token_url)
    else:
        raise EntraError(401, "invalid_client", 7000218,
                         "The request body must contain the following parameter: "
                         "'client_assertion' or 'client_secret'.")
    token, lifetime = issue(data, app["object_id"], app_id, scope[:-len("/.default")], source)
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": token}, app["object_id"], source


def imds_token(data, query, metadata_header):
    """The managed identity's token, IMDS's strings-only answer."""
    if (metadata_header or "").lower() != "true":
        return 400, {"error": "invalid_request",
                     "error_description": "Required metadata header not specified"}
    if not query.get("api-version"):
        return 400, {"error": "invalid_request",
                     "error_description": "Required query variable 'api-version' is missing"}
    resource = query.get("resource")
    if not resource:
        return 400, {"error": "invalid_request",
                     "error_description": "Required query variable 'resource' is missing"}
    imds = data["imds"]
    client_id = query.get("client_id")
    if client_id:
        oid = imds["user_assigned"].get(client_id.lower())
    else:
        oid = imds["system_oid"] if imds.get("system_assigned") else None
    if oid is None:
        return 400, {"error": "invalid_request", "error_description": "Identity not found"}
    resource = resource.rstrip("/")
    token, lifetime = issue(data, oid, client_id or "system-assigned", resource, "imds")
    now = int(time.time())
    return 200, {"access_token": token, "client_id": client_id or "system-assigned",
                 "expires_in": str(lifetime), "expires_on": str(now + lifetime),
                 "ext_expires_in": str(lifetime), "not_before": str(now),
                 "resource": resource, "token_type": "Bearer"}


def openid_configuration(base, tenant):
    t = f"{base}/{tenant}"
    return {"token_endpoint": f"{t}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                      "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token",
                                         "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{LOGIN}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{t}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
            "kerberos_endpoint": f"{t}/kerberos", "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com", "cloud_graph_host_name":
            "graph.windows.net", "msgraph_host": "graph.microsoft.com", "rbac_url":
            "https://pas.windows.net"}


def instance_discovery(base, authority_host):
    return {"tenant_discovery_endpoint":
            f"{base}/common/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": authority_host, "preferred_cache":
                          authority_host, "aliases": [authority_host]}]}
