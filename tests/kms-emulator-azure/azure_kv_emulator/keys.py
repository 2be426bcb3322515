"""Key Vault keys (REST 7.x): versions, attributes, soft delete, wrap/unwrap, JWK.

Each request is checked in Key Vault's order: the access policy of the caller's object id
(403 Forbidden/AccessDenied), the key's existence (404 KeyNotFound), its state (403
Forbidden/KeyDisabled, KeyOperationForbidden), then the cryptography (400 BadParameter).
"""

import base64
import time
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (InvalidUnwrap, aes_key_unwrap,
                                                    aes_key_wrap)

from . import LOCATION, KvError
from .state import vault

RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
OCT_OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
PURGE_DAYS = 90


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    if not isinstance(text, str):
        raise ValueError("not a string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64url(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


_LOADED = {}


def _private_key(pem):
    """A version's RSA key, parsed once per process (PEM parsing is slow under TCG)."""
    key = _LOADED.get(pem)
    if key is None:
        key = _LOADED[pem] = serialization.load_pem_private_key(pem.encode(), None)
    return key


def not_found(name):
    return KvError(404, "KeyNotFound",
                   f"A key with (name/id) {name} was not found in this key vault. If you "
                   "recently deleted this key you may be able to recover it using the correct "
                   "recovery command. For help resolving this issue, please see "
                   "https://go.microsoft.com/fwlink/?linkid=2125182")


def bad(message):
    return KvError(400, "BadParameter", message)


class Vault:
    """The keys of one vault as one principal sees them."""

    def __init__(self, txn, host, caller):
        self.txn = txn
        self.host, self.v = vault(txn.data, host)
        self.caller = caller  # {"oid", "appid"}
        self.base = "https://" + self.host

    # -- access --------------------------------------------------------------------

    def allow(self, permission):
        granted = self.v["policies"].get(self.caller["oid"], [])
        if permission in granted or permission.lower() in [p.lower() for p in granted]:
            return
        who = f"appid={self.caller.get('appid') or ''};oid={self.caller['oid']};" \
              f"iss=https://sts.windows.net/{self.txn.data['tenant']}/"
        raise KvError(403, "Forbidden",
                      f"The user, group or application '{who}' does not have keys "
                      f"{permission} permission on key vault "
                      f"'{self.host.split('.')[0]};location={LOCATION}'. For help resolving "
                      "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                      "AccessDenied")

    # -- representation ----------------------------------------------------------------

    def kid(self, name, version):
        return f"{self.base}/keys/{name}/{version}"

    def bundle(self, name, key, version):
        rec = key["versions"][version]
        jwk = {"kid": self.kid(name, version), "kty": rec["kty"], "key_ops": rec["key_ops"]}
        if rec["kty"].startswith("RSA"):
            jwk["n"], jwk["e"] = rec["n"], rec["e"]
        attributes = {"enabled": rec["enabled"], "created": rec["created"],
                      "updated": rec["updated"], "recoveryLevel": "Recoverable+Purgeable",
                      "recoverableDays": PURGE_DAYS, "exportable": False}
        for field in ("exp", "nbf"):
            if rec.get(field) is not None:
                attributes[field] = rec[field]
        out = {"key": jwk, "attributes": attributes}
        if key.get("tags"):
            out["tags"] = key["tags"]
        if rec["kty"] == "oct-HSM":
            out["key"]["key_size"] = rec["key_size"]
        return out

    def item(self, name, key, version):
        full = self.bundle(name, key, version)
        out = {"kid": full["key"]["kid"], "attributes": full["attributes"]}
        if key.get("tags"):
            out["tags"] = key["tags"]
        return out

    # -- lookups -------------------------------------------------------------------

    def key(self, name):
        key = self.v["keys"].get(name.lower())
        if key is None:
            raise not_found(name)
        return key

    def version(self, name, version):
        key = self.key(name)
        version = (version or "").lower() or key["order"][-1]
        if version not in key["versions"]:
            raise KvError(404, "KeyNotFound",
                          f"A key with (name/id) {name}/{version} was not found in this key "
                          "vault. For help resolving this issue, please see "
                          "https://go.microsoft.com/fwlink/?linkid=2125182")
        return key, version

    # -- management ----------------------------------------------------------------

    def _new_version(self, kty, size, ops):
        now = int(time.time())
        rec = {"kty": kty, "key_size": size, "key_ops": ops, "enabled": True,
               "created": now, "updated": now, "exp": None, "nbf": None}
        if kty.startswith("RSA"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=size)
            numbers = private.public_key().public_numbers()
            rec["n"], rec["e"] = _int_b64url(numbers.n), _int_b64url(numbers.e)
            rec["private"] = private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode()
        else:
            rec["private"] = b64url(__import__("os").urandom(size // 8))
        return uuid.uuid4().hex, rec

    def create(self, name, body):
        self.allow("create")
        kty = body.get("kty")
        if kty not in ("RSA", "RSA-HSM", "oct-HSM"):
            raise bad("The specified value for kty is not supported: "
                      f"{kty!r} (the emulator makes RSA, RSA-HSM and oct-HSM keys).")
        if kty == "oct-HSM" and ".managedhsm." not in self.host:
            raise bad("oct-HSM keys are only supported by Managed HSM.")
        size = body.get("key_size") or (256 if kty == "oct-HSM" else 2048)
        if (kty.startswith("RSA") and size not in (2048, 3072, 4096)) or \
                (kty == "oct-HSM" and size not in (128, 192, 256)):
            raise bad(f"Key size {size} is not supported for kty {kty}.")
        if name.lower() in self.v["deleted"]:
            raise KvError(409, "Conflict",
                          f"Key {name} is currently in a deleted but recoverable state, and "
                          "its name cannot be reused; in this state, the key can only be "
                          "recovered or purged.", "ObjectIsDeletedButRecoverable")
        ops = body.get("key_ops") or (RSA_OPS if kty.startswith("RSA") else OCT_OPS)
        version, rec = self._new_version(kty, size, ops)
        attributes = body.get("attributes") or {}
        if attributes.get("enabled") is False:
            rec["enabled"] = False
        for field in ("exp", "nbf"):
            if attributes.get(field) is not None:
                rec[field] = attributes[field]
        key = self.v["keys"].setdefault(name.lower(), {"name": name, "versions": {},
                                                       "order": [], "tags": {}})
        key["versions"][version] = rec
        key["order"].append(version)
        if body.get("tags"):
            key["tags"] = body["tags"]
        self.txn.changed = True
        return self.bundle(key["name"], key, version)

    def rotate(self, name):
        self.allow("rotate")
        key = self.key(name)
        last = key["versions"][key["order"][-1]]
        version, rec = self._new_version(last["kty"], last["key_size"], last["key_ops"])
        key["versions"][version] = rec
        key["order"].append(version)
        self.txn.changed = True
        return self.bundle(key["name"], key, version)

    def get(self, name, version):
        self.allow("get")
        key, version = self.version(name, version)
        return self.bundle(key["name"], key, version)

    def versions(self, name):
        self.allow("list")
        key = self.key(name)
        return {"value": [self.item(key["name"], key, v) for v in key["order"]],
                "nextLink": None}

    def list(self):
        self.allow("list")
        out = []
        for key in self.v["keys"].values():
            item = self.item(key["name"], key, key["order"][-1])
            item["kid"] = f"{self.base}/keys/{key['name']}"
            out.append(item)
        return {"value": out, "nextLink": None}

    def update(self, name, version, body):
        self.allow("update")
        key, version = self.version(name, version)
        rec = key["versions"][version]
        attributes = body.get("attributes") or {}
        if "enabled" in attributes:
            if not isinstance(attributes["enabled"], bool):
                raise bad("attributes.enabled must be a boolean.")
            rec["enabled"] = attributes["enabled"]
        for field in ("exp", "nbf"):
            if field in attributes:
                rec[field] = attributes[field]
        if body.get("key_ops") is not None:
            rec["key_ops"] = body["key_ops"]
        if body.get("tags") is not None:
            key["tags"] = body["tags"]
        rec["updated"] = int(time.time())
        self.txn.changed = True
        return self.bundle(key["name"], key, version)

    def _deleted_bundle(self, name, entry):
        key = entry["key"]
        out = self.bundle(key["name"], key, key["order"][-1])
        out.update(recoveryId=f"{self.base}/deletedkeys/{key['name']}",
                   deletedDate=entry["deletedDate"],
                   scheduledPurgeDate=entry["scheduledPurgeDate"])
        return out

    def delete(self, name):
        self.allow("delete")
        key = self.key(name)
        now = int(time.time())
        entry = {"key": key, "deletedDate": now,
                 "scheduledPurgeDate": now + PURGE_DAYS * 86400}
        del self.v["keys"][name.lower()]
        self.v["deleted"][name.lower()] = entry
        self.txn.changed = True
        return self._deleted_bundle(name, entry)

    def deleted(self, name):
        self.allow("get")
        entry = self.v["deleted"].get(name.lower())
        if entry is None:
            raise KvError(404, "KeyNotFound", f"Deleted Key not found: {name}")
        return self._deleted_bundle(name, entry)

    def recover(self, name):
        self.allow("recover")
        entry = self.v["deleted"].pop(name.lower(), None)
        if entry is None:
            raise KvError(404, "KeyNotFound", f"Deleted Key not found: {name}")
        self.v["keys"][name.lower()] = entry["key"]
        self.txn.changed = True
        key = entry["key"]
        return self.bundle(key["name"], key, key["order"][-1])

    def purge(self, name):
        self.allow("purge")
        if self.v["deleted"].pop(name.lower(), None) is None:
            raise KvError(404, "KeyNotFound", f"Deleted Key not found: {name}")
        self.txn.changed = True
        return None

    # -- cryptography --------------------------------------------------------------

    def crypto(self, name, version, op, body):
        permission = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey", "encrypt": "encrypt",
                      "decrypt": "decrypt"}[op]
        self.allow(permission)
        key, version = self.version(name, version)
        rec = key["versions"][version]
        # Key Vault refuses the private-key operations of a disabled key; wrapping (a
        # public-key operation) stays allowed, as the service does.
        if not rec["enabled"] and permission in ("unwrapKey", "decrypt"):
            raise KvError(403, "Forbidden",
                          f"Operation {permission} is not allowed on a disabled key.",
                          "KeyDisabled")
        now = time.time()
        if rec.get("exp") is not None and rec["exp"] <= now:
            raise KvError(403, "Forbidden", f"Operation {permission} is not allowed on an "
                          "expired key.", "KeyExpired")
        if permission not in rec["key_ops"]:
            raise KvError(403, "Forbidden",
                          f"Operation {permission} is not permitted on this key.",
                          "KeyOperationForbidden")
        alg, value = body.get("alg"), body.get("value")
        if not alg:
            raise bad("Property alg is required.")
        if not isinstance(value, str) or not value:
            raise bad("Property value is required.")
        try:
            data = unb64url(value)
        except (ValueError, TypeError):
            raise bad("The parameter value is not a valid base64url string.") from None
        encrypting = permission in ("wrapKey", "encrypt")
        try:
            out = self._apply(rec, alg, data, encrypting)
        except (ValueError, InvalidUnwrap):
            # Another key's blob, a tampered one, or too long a plaintext.
            raise bad("Invalid parameter: the value does not " +
                      ("fit the key." if encrypting else "unwrap under this key.")) from None
        return {"kid": self.kid(key["name"], version), "value": b64url(out)}

    @staticmethod
    def _apply(rec, alg, data, encrypting):
        if rec["kty"].startswith("RSA"):
            pads = {"RSA-OAEP-256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                                 None),
                    "RSA-OAEP": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),
                    "RSA1_5": padding.PKCS1v15()}
            if alg not in pads:
                raise KvError(400, "BadParameter",
                              f"Algorithm {alg} is not supported for key type {rec['kty']}.")
            private = _private_key(rec["private"])
            if encrypting:
                return private.public_key().encrypt(data, pads[alg])
            return private.decrypt(data, pads[alg])
        material = unb64url(rec["private"])
        if alg != f"A{len(material) * 8}KW":
            raise KvError(400, "BadParameter",
                          f"Algorithm {alg} is not supported for key type {rec['kty']}.")
        return aes_key_wrap(material, data) if encrypting else aes_key_unwrap(material, data)
