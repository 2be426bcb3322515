"""Cloud KMS v1 REST: key rings, crypto keys (ENCRYPT_DECRYPT, software) and their
versions, :encrypt / :decrypt with CRC32C integrity fields, IAM policy methods.

Checks run in Google's order: authentication (server.py), IAM (a missing resource is
PERMISSION_DENIED "(or it may not exist)" unless the caller may see it), existence
(NOT_FOUND), state (FAILED_PRECONDITION), then the cryptography.
"""

import base64
import binascii
import datetime
import re
import time
import uuid

from . import crypto, iam
from .errors import GoogleError, invalid

ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
LOC_RE = re.compile(r"^[a-z0-9-]{1,63}$")
MAX_DATA = 65536
DEFAULT_DESTROY = 30 * 86400
STATES = ("ENABLED", "DISABLED", "DESTROYED", "DESTROY_SCHEDULED")


def rfc3339(ts):
    moment = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def parse_rfc3339(s):
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", s or "")
    if not m:
        raise invalid(f"Invalid value for timestamp: {s!r}")
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return base + (float("0" + m.group(2)) if m.group(2) else 0.0)


def parse_duration(s):
    m = re.match(r"^(\d+)(\.\d+)?s$", s or "") if isinstance(s, str) else None
    if not m:
        raise invalid(f"Invalid value for duration: {s!r}")
    return int(m.group(1))


def b64_field(body, field, required=False):
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise invalid(f"{field} is required.")
        return b""
    if not isinstance(value, str):
        raise invalid(f"Invalid value at '{field}' (TYPE_BYTES), {value!r}")
    try:
        # Protobuf's JSON mapping accepts both alphabets, padded or not.
        std = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"Invalid value at '{field}' (TYPE_BYTES), Base64 decoding "
                      "failed for \"" + value[:40] + "\"") from None


def int64_field(body, field):
    value = body.get(field)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value at '{field}' (TYPE_INT64), {value!r}") from None


def b64(data):
    return base64.b64encode(data).decode()


class Kms:
    def __init__(self, data, principal):
        self.data = data
        self.principal = principal
        self.dirty = False
        self.resource = None  # the resource the call was about, for the audit log
        self.aad = None

    # -- names -------------------------------------------------------------------

    @staticmethod
    def split(name):
        """(project, location, ring, key, version) of a name, Nones for missing parts."""
        p = name.split("/")
        if (len(p) < 4 or p[0] != "projects" or p[2] != "locations" or not p[1]
                or not LOC_RE.match(p[3])):
            raise invalid(f"Resource name [{name}] is not valid.")
        out = [p[1], p[3], None, None, None]
        for i, kind in ((4, "keyRings"), (6, "cryptoKeys"), (8, "cryptoKeyVersions")):
            if len(p) > i:
                if p[i] != kind or len(p) < i + 2 or not ID_RE.match(p[i + 1]):
                    raise invalid(f"Resource name [{name}] is not valid.")
                out[i // 2] = p[i + 1]
        if len(p) > 10:
            raise invalid(f"Resource name [{name}] is not valid.")
        return tuple(out)

    def check(self, permission, resource):
        self.resource = resource
        iam.check(self.data, self.principal, permission, resource)

    def key_ring(self, name):
        ring = self.data["key_rings"].get(name)
        if ring is None:
            raise GoogleError("NOT_FOUND", f"KeyRing {name} not found.")
        return ring

    def crypto_key(self, name):
        key = self.data["crypto_keys"].get(name)
        if key is None:
            raise GoogleError("NOT_FOUND", f"CryptoKey {name} not found.")
        self._advance(name, key)
        return key

    def version(self, key_name, number):
        key = self.crypto_key(key_name)
        v = key["versions"].get(str(number))
        if v is None:
            raise GoogleError("NOT_FOUND",
                              f"CryptoKeyVersion {key_name}/cryptoKeyVersions/{number} "
                              "not found.")
        return key, v

    def _advance(self, name, key):
        """What time did meanwhile: due destructions, due automatic rotations."""
        now = time.time()
        for v in key["versions"].values():
            if v["state"] == "DESTROY_SCHEDULED" and v["destroyTime"] <= now:
                self._destroy_now(v, now)
        nxt = key.get("nextRotationTime")
        if nxt is not None and nxt <= now and key.get("rotationPeriod"):
            number = self._new_version(key)
            key["primary"] = number
            while key["nextRotationTime"] <= now:
                key["nextRotationTime"] += key["rotationPeriod"]
            self.dirty = True

    def _destroy_now(self, v, now):
        v["state"] = "DESTROYED"
        v["material"] = None
        v["destroyEventTime"] = now
        self.dirty = True

    def _new_version(self, key):
        number = key["next_version"]
        key["next_version"] += 1
        now = time.time()
        key["versions"][str(number)] = {
            "state": "ENABLED", "createTime": now, "generateTime": now,
            "material": b64(crypto.new_material()), "destroyTime": None,
            "destroyEventTime": None}
        self.dirty = True
        return str(number)

    # -- JSON views ----------------------------------------------------------------

    def version_json(self, key_name, number, v):
        out = {"name": f"{key_name}/cryptoKeyVersions/{number}", "state": v["state"],
               "protectionLevel": "SOFTWARE", "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
               "createTime": rfc3339(v["createTime"])}
        if v.get("generateTime"):
            out["generateTime"] = rfc3339(v["generateTime"])
        if v.get("destroyTime"):
            out["destroyTime"] = rfc3339(v["destroyTime"])
        if v.get("destroyEventTime"):
            out["destroyEventTime"] = rfc3339(v["destroyEventTime"])
        return out

    def key_json(self, name, key):
        out = {"name": name, "purpose": "ENCRYPT_DECRYPT",
               "createTime": rfc3339(key["createTime"]),
               "versionTemplate": {"protectionLevel": "SOFTWARE",
                                   "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
               "destroyScheduledDuration": f"{key['destroyScheduledDuration']}s"}
        if key.get("primary"):
            out["primary"] = self.version_json(name, key["primary"],
                                               key["versions"][key["primary"]])
        if key.get("labels"):
            out["labels"] = key["labels"]
        if key.get("rotationPeriod"):
            out["rotationPeriod"] = f"{key['rotationPeriod']}s"
        if key.get("nextRotationTime"):
            out["nextRotationTime"] = rfc3339(key["nextRotationTime"])
        return out

    # -- key rings -----------------------------------------------------------------

    def create_key_ring(self, parent, query, body):
        project, location, ring, _, _ = self.split(parent)
        if ring is not None:
            raise invalid(f"Resource name [{parent}] is not a location.")
        ring_id = query.get("keyRingId", "")
        if not ID_RE.match(ring_id):
            raise invalid("Invalid key ring id; it must match [a-zA-Z0-9_-]{1,63}.")
        name = f"{parent}/keyRings/{ring_id}"
        self.check("cloudkms.keyRings.create", parent)
        if name in self.data["key_rings"]:
            raise GoogleError("ALREADY_EXISTS", f"KeyRing {name} already exists.")
        now = time.time()
        self.data["key_rings"][name] = {"createTime": now}
        self.dirty = True
        return {"name": name, "createTime": rfc3339(now)}

    def get_key_ring(self, name):
        self.check("cloudkms.keyRings.get", name)
        ring = self.key_ring(name)
        return {"name": name, "createTime": rfc3339(ring["createTime"])}

    def list_key_rings(self, parent):
        self.split(parent)
        self.check("cloudkms.keyRings.list", parent)
        rings = [{"name": n, "createTime": rfc3339(r["createTime"])}
                 for n, r in sorted(self.data["key_rings"].items())
                 if n.startswith(parent + "/keyRings/")]
        return {"keyRings": rings, "totalSize": len(rings)} if rings else {}

    # -- crypto keys ---------------------------------------------------------------

    def create_crypto_key(self, parent, query, body):
        _, _, ring, key_id, _ = self.split(parent)
        if ring is None or key_id is not None:
            raise invalid(f"Resource name [{parent}] is not a key ring.")
        key_id = query.get("cryptoKeyId", "")
        if not ID_RE.match(key_id):
            raise invalid("Invalid crypto key id; it must match [a-zA-Z0-9_-]{1,63}.")
        self.check("cloudkms.cryptoKeys.create", parent)
        self.key_ring(parent)
        name = f"{parent}/cryptoKeys/{key_id}"
        if name in self.data["crypto_keys"]:
            raise GoogleError("ALREADY_EXISTS", f"CryptoKey {name} already exists.")
        purpose = body.get("purpose")
        if purpose != "ENCRYPT_DECRYPT":
            raise invalid("The emulator supports only purpose ENCRYPT_DECRYPT (got "
                          f"{purpose!r}).")
        template = body.get("versionTemplate") or {}
        if template.get("protectionLevel", "SOFTWARE") != "SOFTWARE" or template.get(
                "algorithm", "GOOGLE_SYMMETRIC_ENCRYPTION") != "GOOGLE_SYMMETRIC_ENCRYPTION":
            raise invalid("The emulator supports only SOFTWARE GOOGLE_SYMMETRIC_ENCRYPTION.")
        destroy = parse_duration(body["destroyScheduledDuration"]) if body.get(
            "destroyScheduledDuration") else DEFAULT_DESTROY
        key = {"uid": uuid.uuid4().hex, "createTime": time.time(), "primary": None,
               "versions": {}, "next_version": 1, "destroyScheduledDuration": destroy,
               "labels": body.get("labels") or {}, "rotationPeriod": None,
               "nextRotationTime": None}
        if body.get("rotationPeriod"):
            key["rotationPeriod"] = parse_duration(body["rotationPeriod"])
        if body.get("nextRotationTime"):
            key["nextRotationTime"] = parse_rfc3339(body["nextRotationTime"])
        if query.get("skipInitialVersionCreation", "false").lower() != "true":
            key["primary"] = self._new_version(key)
        self.data["crypto_keys"][name] = key
        self.dirty = True
        return self.key_json(name, key)

    def get_crypto_key(self, name):
        self.check("cloudkms.cryptoKeys.get", name)
        return self.key_json(name, self.crypto_key(name))

    def list_crypto_keys(self, parent):
        self.check("cloudkms.cryptoKeys.list", parent)
        self.key_ring(parent)
        keys = [self.key_json(n, self.crypto_key(n))
                for n in sorted(self.data["crypto_keys"])
                if n.startswith(parent + "/cryptoKeys/")]
        return {"cryptoKeys": keys, "totalSize": len(keys)} if keys else {}

    def update_crypto_key(self, name, query, body):
        self.check("cloudkms.cryptoKeys.update", name)
        key = self.crypto_key(name)
        mask = [m for m in query.get("updateMask", "").split(",") if m]
        if not mask:
            raise invalid("updateMask is required.")
        for field in mask:
            if field == "labels":
                key["labels"] = body.get("labels") or {}
            elif field == "rotationPeriod":
                key["rotationPeriod"] = (parse_duration(body["rotationPeriod"])
                                         if body.get("rotationPeriod") else None)
            elif field == "nextRotationTime":
                key["nextRotationTime"] = (parse_rfc3339(body["nextRotationTime"])
                                           if body.get("nextRotationTime") else None)
            else:
                raise invalid(f"Field {field} cannot be updated.")
        self.dirty = True
        return self.key_json(name, key)

    def update_primary(self, name, body):
        self.check("cloudkms.cryptoKeys.update", name)
        key = self.crypto_key(name)
        number = str(body.get("cryptoKeyVersionId", ""))
        v = key["versions"].get(number)
        if v is None:
            raise GoogleError("NOT_FOUND", f"CryptoKeyVersion {name}/cryptoKeyVersions/"
                              f"{number} not found.")
        if v["state"] != "ENABLED":
            raise GoogleError("FAILED_PRECONDITION",
                              f"{name}/cryptoKeyVersions/{number} is not enabled, current "
                              f"state is: {v['state']}.")
        key["primary"] = number
        self.dirty = True
        return self.key_json(name, key)

    # -- versions ------------------------------------------------------------------

    def create_version(self, parent, body):
        self.check("cloudkms.cryptoKeyVersions.create", parent)
        key = self.crypto_key(parent)
        number = self._new_version(key)
        return self.version_json(parent, number, key["versions"][number])

    def list_versions(self, parent, query):
        self.check("cloudkms.cryptoKeyVersions.list", parent)
        key = self.crypto_key(parent)
        wanted = query.get("filter", "")
        out = [self.version_json(parent, n, v)
               for n, v in sorted(key["versions"].items(), key=lambda i: int(i[0]))]
        m = re.match(r"^state\s*[:=]\s*(\w+)$", wanted.strip())
        if m:
            out = [v for v in out if v["state"] == m.group(1)]
        return {"cryptoKeyVersions": out, "totalSize": len(out)} if out else {}

    def get_version(self, name):
        _, _, _, _, number = self.split(name)
        key_name = name.rsplit("/cryptoKeyVersions/", 1)[0]
        self.check("cloudkms.cryptoKeyVersions.get", name)
        _, v = self.version(key_name, number)
        return self.version_json(key_name, number, v)

    def update_version(self, name, query, body):
        _, _, _, _, number = self.split(name)
        key_name = name.rsplit("/cryptoKeyVersions/", 1)[0]
        self.check("cloudkms.cryptoKeyVersions.update", name)
        _, v = self.version(key_name, number)
        mask = [m for m in query.get("updateMask", "").split(",") if m]
        if mask != ["state"]:
            raise invalid("updateMask must be \"state\".")
        state = body.get("state")
        if state not in ("ENABLED", "DISABLED"):
            raise invalid(f"Invalid value for state: {state!r}")
        if v["state"] not in ("ENABLED", "DISABLED"):
            raise GoogleError("FAILED_PRECONDITION",
                              f"{name} is not enabled or disabled, current state is: "
                              f"{v['state']}.")
        v["state"] = state
        self.dirty = True
        return self.version_json(key_name, number, v)

    def destroy_version(self, name):
        _, _, _, _, number = self.split(name)
        key_name = name.rsplit("/cryptoKeyVersions/", 1)[0]
        self.check("cloudkms.cryptoKeyVersions.destroy", name)
        key, v = self.version(key_name, number)
        if v["state"] not in ("ENABLED", "DISABLED"):
            raise GoogleError("FAILED_PRECONDITION",
                              f"{name} is not enabled or disabled, current state is: "
                              f"{v['state']}.")
        v["state"] = "DESTROY_SCHEDULED"
        v["destroyTime"] = time.time() + key["destroyScheduledDuration"]
        self.dirty = True
        return self.version_json(key_name, number, v)

    def restore_version(self, name):
        _, _, _, _, number = self.split(name)
        key_name = name.rsplit("/cryptoKeyVersions/", 1)[0]
        self.check("cloudkms.cryptoKeyVersions.restore", name)
        _, v = self.version(key_name, number)
        if v["state"] != "DESTROY_SCHEDULED":
            raise GoogleError("FAILED_PRECONDITION",
                              f"{name} is not scheduled for destruction, current state is: "
                              f"{v['state']}.")
        v["state"] = "DISABLED"
        v["destroyTime"] = None
        self.dirty = True
        return self.version_json(key_name, number, v)

    def destroy_due(self, name):
        """Control API: a scheduled destruction happens now."""
        _, _, _, _, number = self.split(name)
        key_name = name.rsplit("/cryptoKeyVersions/", 1)[0]
        _, v = self.version(key_name, number)
        if v["state"] != "DESTROY_SCHEDULED":
            raise GoogleError("FAILED_PRECONDITION",
                              f"{name} is not scheduled for destruction, current state is: "
                              f"{v['state']}.")
        self._destroy_now(v, time.time())
        return self.version_json(key_name, number, v)

    # -- cryptography --------------------------------------------------------------

    @staticmethod
    def _not_enabled(name, state):
        return GoogleError("FAILED_PRECONDITION",
                           f"{name} is not enabled, current state is: {state}.")

    def _checksums(self, body, pairs):
        verified = []
        for data, field in pairs:
            crc = int64_field(body, field)
            if crc is not None and crc != crypto.crc32c(data):
                src = {"plaintextCrc32c": "plaintext", "ciphertextCrc32c": "ciphertext",
                       "additionalAuthenticatedDataCrc32c": "additional_authenticated_data"}
                snake = re.sub(r"([A-Z])", r"_\1", field).lower().replace("32_c", "32c")
                raise invalid(f"The checksum in field {snake} did not match the data in "
                              f"field {src[field]}.")
            verified.append(crc is not None)
        return verified

    def encrypt(self, name, body):
        _, _, ring, key_id, number = self.split(name)
        if key_id is None:
            raise invalid(f"Resource name [{name}] is not a crypto key.")
        key_name = name.split("/cryptoKeyVersions/")[0]
        self.check("cloudkms.cryptoKeyVersions.useToEncrypt", key_name)
        plaintext = b64_field(body, "plaintext")
        aad = b64_field(body, "additionalAuthenticatedData")
        self.aad = aad
        if len(plaintext) > MAX_DATA:
            raise invalid(f"The plaintext must be at most {MAX_DATA} bytes.")
        if len(aad) > MAX_DATA:
            raise invalid(f"The additional authenticated data must be at most {MAX_DATA} "
                          "bytes.")
        key = self.crypto_key(key_name)
        if number is None:
            number = key.get("primary")
            if number is None:
                raise GoogleError("FAILED_PRECONDITION",
                                  f"{key_name} has no primary version.")
        key, v = self.version(key_name, number)
        version_name = f"{key_name}/cryptoKeyVersions/{number}"
        if v["state"] != "ENABLED":
            raise self._not_enabled(version_name, v["state"])
        verified = self._checksums(body, [(plaintext, "plaintextCrc32c"),
                                          (aad, "additionalAuthenticatedDataCrc32c")])
        blob = crypto.seal(bytes.fromhex(key["uid"]), int(number),
                           base64.b64decode(v["material"]), plaintext, aad)
        return {"name": version_name, "ciphertext": b64(blob),
                "ciphertextCrc32c": str(crypto.crc32c(blob)),
                "verifiedPlaintextCrc32c": verified[0],
                "verifiedAdditionalAuthenticatedDataCrc32c": verified[1],
                "protectionLevel": "SOFTWARE"}

    def decrypt(self, name, body):
        _, _, _, key_id, number = self.split(name)
        if key_id is None or number is not None:
            raise invalid(f"Resource name [{name}] is not a crypto key.")
        self.check("cloudkms.cryptoKeyVersions.useToDecrypt", name)
        blob = b64_field(body, "ciphertext", required=True)
        aad = b64_field(body, "additionalAuthenticatedData")
        self.aad = aad
        key = self.crypto_key(name)
        self._checksums(body, [(blob, "ciphertextCrc32c"),
                               (aad, "additionalAuthenticatedDataCrc32c")])
        failed = invalid("Decryption failed: verify that 'name' refers to the correct "
                         "CryptoKey.")
        parsed = crypto.parse(blob)
        if parsed is None or parsed[0] != bytes.fromhex(key["uid"]):
            raise failed
        number = str(parsed[1])
        v = key["versions"].get(number)
        if v is None:
            raise failed
        if v["state"] != "ENABLED":
            raise self._not_enabled(f"{name}/cryptoKeyVersions/{number}", v["state"])
        plaintext = crypto.open_(base64.b64decode(v["material"]), blob, aad)
        if plaintext is None:
            raise failed
        out = {"plaintextCrc32c": str(crypto.crc32c(plaintext)),
               "usedPrimary": number == key.get("primary"), "protectionLevel": "SOFTWARE"}
        if plaintext:
            out["plaintext"] = b64(plaintext)
        return out

    # -- IAM -----------------------------------------------------------------------

    def get_iam_policy(self, resource):
        _, _, ring, key_id, number = self.split(resource)
        if ring is None or number is not None:
            raise invalid(f"Resource name [{resource}] does not support IAM policies.")
        kind = "cryptoKeys" if key_id else "keyRings"
        self.check(f"cloudkms.{kind}.getIamPolicy", resource)
        self.crypto_key(resource) if key_id else self.key_ring(resource)
        return iam.get_policy(self.data, resource)

    def set_iam_policy(self, resource, body):
        _, _, ring, key_id, number = self.split(resource)
        if ring is None or number is not None:
            raise invalid(f"Resource name [{resource}] does not support IAM policies.")
        kind = "cryptoKeys" if key_id else "keyRings"
        self.check(f"cloudkms.{kind}.setIamPolicy", resource)
        self.crypto_key(resource) if key_id else self.key_ring(resource)
        self.dirty = True
        return iam.set_policy(self.data, resource, body)

    def test_iam_permissions(self, resource, body):
        self.resource = resource
        perms = body.get("permissions") or []
        held = [p for p in perms if isinstance(p, str)
                and iam.allowed(self.data, self.principal, p, resource)]
        return {"permissions": held} if held else {}


# method, path pattern (after /v1/), operation, handler(kms, name, query, body)
ROUTES = [
    ("GET", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+"
            r"/cryptoKeyVersions/[^/:]+)", "GetCryptoKeyVersion",
     lambda k, n, q, b: k.get_version(n)),
    ("PATCH", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+"
              r"/cryptoKeyVersions/[^/:]+)", "UpdateCryptoKeyVersion",
     lambda k, n, q, b: k.update_version(n, q, b)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+"
             r"/cryptoKeyVersions/[^/:]+):destroy", "DestroyCryptoKeyVersion",
     lambda k, n, q, b: k.destroy_version(n)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+"
             r"/cryptoKeyVersions/[^/:]+):restore", "RestoreCryptoKeyVersion",
     lambda k, n, q, b: k.restore_version(n)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+"
             r"(?:/cryptoKeyVersions/[^/:]+)?):encrypt", "Encrypt",
     lambda k, n, q, b: k.encrypt(n, b)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+)"
             r":decrypt", "Decrypt", lambda k, n, q, b: k.decrypt(n, b)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+)"
             r":updatePrimaryVersion", "UpdateCryptoKeyPrimaryVersion",
     lambda k, n, q, b: k.update_primary(n, b)),
    ("GET", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+)"
            r"/cryptoKeyVersions", "ListCryptoKeyVersions",
     lambda k, n, q, b: k.list_versions(n, q)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+)"
             r"/cryptoKeyVersions", "CreateCryptoKeyVersion",
     lambda k, n, q, b: k.create_version(n, b)),
    ("GET", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+)",
     "GetCryptoKey", lambda k, n, q, b: k.get_crypto_key(n)),
    ("PATCH", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys/[^/:]+)",
     "UpdateCryptoKey", lambda k, n, q, b: k.update_crypto_key(n, q, b)),
    ("GET", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+)/cryptoKeys",
     "ListCryptoKeys", lambda k, n, q, b: k.list_crypto_keys(n)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+)/cryptoKeys",
     "CreateCryptoKey", lambda k, n, q, b: k.create_crypto_key(n, q, b)),
    ("GET", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+)", "GetKeyRing",
     lambda k, n, q, b: k.get_key_ring(n)),
    ("GET", r"(projects/[^/:]+/locations/[^/:]+)/keyRings", "ListKeyRings",
     lambda k, n, q, b: k.list_key_rings(n)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+)/keyRings", "CreateKeyRing",
     lambda k, n, q, b: k.create_key_ring(n, q, b)),
    ("GET", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+(?:/cryptoKeys/[^/:]+)?)"
            r":getIamPolicy", "GetIamPolicy", lambda k, n, q, b: k.get_iam_policy(n)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+(?:/cryptoKeys/[^/:]+)?)"
             r":getIamPolicy", "GetIamPolicy", lambda k, n, q, b: k.get_iam_policy(n)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+(?:/cryptoKeys/[^/:]+)?)"
             r":setIamPolicy", "SetIamPolicy", lambda k, n, q, b: k.set_iam_policy(n, b)),
    ("POST", r"(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+(?:/cryptoKeys/[^/:]+)?)"
             r":testIamPermissions", "TestIamPermissions",
     lambda k, n, q, b: k.test_iam_permissions(n, b)),
]
ROUTES = [(m, re.compile("^" + p + "$"), op, h) for m, p, op, h in ROUTES]


def route(method, path):
    """(operation, resource name, handler) for a /v1/ path, or None."""
    for m, pattern, op, handler in ROUTES:
        if m == method:
            match = pattern.match(path)
            if match:
                return op, match.group(1), handler
    return None
