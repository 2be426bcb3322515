"""IAM as far as Cloud KMS needs it.

A principal ("user:EMAIL", "serviceAccount:EMAIL") holds a permission on a resource when
a binding of the project policy, of the key ring's or of the key's policy (inheritance
down the hierarchy, as in GCP) grants it a role that includes the permission, and no
deny rule (IAM deny policies, which override allows) denies it. Members "allUsers" and
"allAuthenticatedUsers" match everyone.
"""

import base64
import hashlib
import json

from .errors import GoogleError, invalid

_USE = ["cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt"]
_VIEW = ["cloudkms.locations.get", "cloudkms.locations.list",
         "cloudkms.keyRings.get", "cloudkms.keyRings.list",
         "cloudkms.cryptoKeys.get", "cloudkms.cryptoKeys.list",
         "cloudkms.cryptoKeyVersions.get", "cloudkms.cryptoKeyVersions.list"]
_ADMIN = _VIEW + [
    "cloudkms.keyRings.create", "cloudkms.keyRings.getIamPolicy",
    "cloudkms.keyRings.setIamPolicy", "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.update", "cloudkms.cryptoKeys.getIamPolicy",
    "cloudkms.cryptoKeys.setIamPolicy", "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.update", "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.restore"]

ROLES = {
    "roles/owner": ["*"],
    "roles/editor": ["*"],
    "roles/cloudkms.admin": _ADMIN,
    "roles/cloudkms.viewer": _VIEW,
    "roles/cloudkms.cryptoKeyEncrypterDecrypter": _USE + ["cloudkms.locations.get"],
    "roles/cloudkms.cryptoKeyEncrypter": _USE[:1] + ["cloudkms.locations.get"],
    "roles/cloudkms.cryptoKeyDecrypter": _USE[1:] + ["cloudkms.locations.get"],
}


def _ancestors(resource):
    """The resource and the IAM-bearing resources above it, project first."""
    parts = resource.split("/")
    out = []
    # projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/V]
    if len(parts) >= 6:
        out.append("/".join(parts[:6]))
    if len(parts) >= 8:
        out.append("/".join(parts[:8]))
    return out


def _grants(policy, principal, permission):
    for binding in (policy or {}).get("bindings", []):
        members = binding.get("members", [])
        if principal in members or "allUsers" in members or "allAuthenticatedUsers" in members:
            perms = ROLES.get(binding.get("role"), [])
            if "*" in perms or permission in perms:
                return True
    return False


def _denied(data, principal, permission, resource):
    for rule in data.get("deny", []):
        if rule.get("principal") not in (principal, "*"):
            continue
        perms = rule.get("permissions") or ["*"]
        if "*" not in perms and permission not in perms:
            continue
        prefix = rule.get("resource")
        if prefix and not (resource == prefix or resource.startswith(prefix + "/")):
            continue
        return True
    return False


def allowed(data, principal, permission, resource):
    if _denied(data, principal, permission, resource):
        return False
    if _grants(data.get("project_policy"), principal, permission):
        return True
    return any(_grants(data["policies"].get(r), principal, permission)
               for r in _ancestors(resource))


def check(data, principal, permission, resource):
    """PERMISSION_DENIED in Google's words unless the principal holds the permission."""
    if not allowed(data, principal, permission, resource):
        iam_resource = _ancestors(resource)[-1] if _ancestors(resource) else resource
        raise GoogleError(
            "PERMISSION_DENIED",
            f"Permission '{permission}' denied on resource '{iam_resource}' "
            "(or it may not exist).")


def etag(policy):
    digest = hashlib.sha256(json.dumps(policy.get("bindings", []),
                                       sort_keys=True).encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def get_policy(data, resource):
    policy = dict(data["policies"].get(resource) or {"bindings": []})
    out = {"version": 1, "etag": etag(policy)}
    if policy.get("bindings"):
        out["bindings"] = policy["bindings"]
    return out


def set_policy(data, resource, body):
    policy = body.get("policy") if isinstance(body, dict) else None
    if not isinstance(policy, dict):
        raise invalid("Invalid JSON payload: 'policy' is required.")
    bindings = policy.get("bindings", [])
    if not isinstance(bindings, list):
        raise invalid("policy.bindings must be a list.")
    for b in bindings:
        if (not isinstance(b, dict) or not isinstance(b.get("role"), str)
                or not isinstance(b.get("members", []), list)):
            raise invalid("Invalid binding in policy.")
        if b["role"] not in ROLES:
            raise invalid(f"Role {b['role']} is not supported for this resource.")
        for m in b.get("members", []):
            if not isinstance(m, str) or (":" not in m and m not in (
                    "allUsers", "allAuthenticatedUsers")):
                raise invalid(f"Invalid member {m!r}.")
    current = data["policies"].get(resource) or {"bindings": []}
    if policy.get("etag") and policy["etag"] != etag(current):
        raise GoogleError("ABORTED", "There were concurrent policy changes. Please retry "
                          "the whole read-modify-write with exponential backoff.")
    stored = {"bindings": [{"role": b["role"], "members": sorted(set(b.get("members", [])))}
                           for b in bindings if b.get("members")]}
    data["policies"][resource] = stored
    return get_policy(data, resource)
