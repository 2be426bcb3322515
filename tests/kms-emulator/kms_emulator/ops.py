"""The KMS operations, run against the state inside one transaction.

Each handler receives validated parameters (blobs already decoded) and the
calling principal's ARN, and returns the response body (blobs as base64).
Handlers check everything before they change anything, so a KMSError never
leaves a half-done change behind.  Key metadata is AWS-shaped; crypto
responses name the key by ARN, as AWS does.
"""

import base64
import os
import secrets
import time
import uuid

from . import ACCOUNT_ID, crypto, policy
from .errors import KMSError

DAY = 86400.0
SYMMETRIC = "SYMMETRIC_DEFAULT"


def _b64(data):
    return base64.b64encode(data).decode("ascii")


class Call:
    """What one request is about: used by handlers and by the audit log."""

    def __init__(self, txn, principal_arn, now=None):
        self.txn = txn
        self.data = txn.data
        self.principal = principal_arn
        self.now = now or time.time()
        self.key_arn = None
        self.encryption_context = None


class Kms:
    def __init__(self, region, account_id=ACCOUNT_ID):
        self.region = region
        self.account = account_id
        self._handlers = {name: getattr(self, "op_" + name) for name in (
            "CreateKey DescribeKey ListKeys CreateAlias UpdateAlias DeleteAlias "
            "ListAliases Encrypt Decrypt GenerateDataKey "
            "GenerateDataKeyWithoutPlaintext ReEncrypt EnableKey DisableKey "
            "ScheduleKeyDeletion CancelKeyDeletion GetKeyRotationStatus "
            "EnableKeyRotation DisableKeyRotation RotateKeyOnDemand "
            "PutKeyPolicy GetKeyPolicy CreateGrant ListGrants RevokeGrant "
            "RetireGrant").split()}

    # -- names ---------------------------------------------------------------

    def key_arn(self, key_id):
        return f"arn:aws:kms:{self.region}:{self.account}:key/{key_id}"

    def alias_arn(self, name):
        return f"arn:aws:kms:{self.region}:{self.account}:{name}"

    def supports(self, operation):
        return operation in self._handlers

    def run(self, call, operation, params):
        self.housekeeping(call)
        return self._handlers[operation](call, params)

    # -- time-driven changes ---------------------------------------------------

    def housekeeping(self, call):
        """Finish deletions whose window passed; run due automatic rotations."""
        for key in list(call.data["keys"].values()):
            if key["KeyState"] == "PendingDeletion" and key["DeletionDate"] <= call.now:
                self.delete_key(call, key["KeyId"])
            rotation = key["Rotation"]
            if (key["KeyState"] == "Enabled" and rotation["Enabled"]
                    and rotation["Next"] and rotation["Next"] <= call.now):
                self._add_material(key)
                rotation["Next"] = call.now + rotation["PeriodInDays"] * DAY
                call.txn.dirty = True

    def delete_key(self, call, key_id):
        """Delete a key for good, with its aliases and grants."""
        data = call.data
        data["keys"].pop(key_id, None)
        for name in [n for n, a in data["aliases"].items() if a["TargetKeyId"] == key_id]:
            del data["aliases"][name]
        for gid in [g for g, v in data["grants"].items() if v["KeyId"] == key_id]:
            del data["grants"][gid]
        data.setdefault("deleted_keys", []).append(key_id)
        call.txn.dirty = True

    # -- lookups and checks ----------------------------------------------------

    def _not_found(self, key_id):
        return KMSError("NotFoundException",
                        f"Key '{self.key_arn(key_id)}' does not exist")

    def resolve(self, call, ref, allow_alias=False):
        """The key named by a key id, key ARN or (if allowed) alias (ARN)."""
        prefix = f"arn:aws:kms:{self.region}:{self.account}:"
        name = ref
        if ref.startswith("arn:"):
            if not ref.startswith(prefix):
                raise KMSError("NotFoundException", f"Invalid arn {ref}")
            name = ref[len(prefix):]
            if name.startswith("key/"):
                name = name[4:]
            elif not name.startswith("alias/"):
                raise KMSError("NotFoundException", f"Invalid arn {ref}")
        elif ref.startswith("key/"):
            raise KMSError("NotFoundException", f"Invalid keyId {ref}")
        if name.startswith("alias/"):
            if not allow_alias:
                raise KMSError("NotFoundException", f"Invalid keyId {ref}")
            alias = call.data["aliases"].get(name)
            if alias is None:
                raise KMSError("NotFoundException",
                               f"Alias {self.alias_arn(name)} is not found.")
            name = alias["TargetKeyId"]
        key = call.data["keys"].get(name)
        if key is None:
            raise self._not_found(name)
        call.key_arn = self.key_arn(key["KeyId"])
        return key

    def authorize(self, call, key, operation, context=None, new_constraints=None):
        grants = [g for g in call.data["grants"].values() if g["KeyId"] == key["KeyId"]]
        policy.authorize(key["Policy"], grants, call.principal, operation,
                         self.key_arn(key["KeyId"]), context, new_constraints)

    def usable(self, key, allow_disabled=False):
        """Raise the AWS error for a key that cannot be used right now."""
        arn = self.key_arn(key["KeyId"])
        if key["KeyState"] == "PendingDeletion":
            raise KMSError("KMSInvalidStateException", f"{arn} is pending deletion.")
        if key["KeyState"] == "Disabled" and not allow_disabled:
            raise KMSError("DisabledException", f"{arn} is disabled.")

    @staticmethod
    def _materials(key):
        return [base64.b64decode(m) for m in key["Materials"]]

    @staticmethod
    def _add_material(key):
        key["Materials"].append(_b64(crypto.new_key_material()))

    def metadata(self, key):
        meta = {
            "AWSAccountId": self.account,
            "KeyId": key["KeyId"],
            "Arn": self.key_arn(key["KeyId"]),
            "CreationDate": key["CreationDate"],
            "Enabled": key["KeyState"] == "Enabled",
            "Description": key["Description"],
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": key["KeyState"],
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": SYMMETRIC,
            "KeySpec": SYMMETRIC,
            "EncryptionAlgorithms": [SYMMETRIC],
            "MultiRegion": False,
        }
        if key["KeyState"] == "PendingDeletion":
            meta["DeletionDate"] = key["DeletionDate"]
            meta["PendingDeletionWindowInDays"] = key["PendingWindowInDays"]
        return meta

    def _check_policy(self, call, text, bypass, key_arn):
        doc = policy.parse(text)
        if not bypass and policy.evaluate(doc, call.principal, "kms:PutKeyPolicy",
                                          key_arn, None) != "Allow":
            raise KMSError("MalformedPolicyDocumentException",
                           "The new key policy will not allow you to update the "
                           "key policy in the future.")

    @staticmethod
    def _paginate(items, params, default_limit, field):
        limit = params.get("Limit", default_limit)
        marker = params.get("Marker")
        start = 0
        if marker is not None:
            if not marker.isdigit() or int(marker) > len(items):
                raise KMSError("InvalidMarkerException", "Invalid marker")
            start = int(marker)
        page = items[start:start + limit]
        out = {field: page, "Truncated": start + limit < len(items)}
        if out["Truncated"]:
            out["NextMarker"] = str(start + limit)
        return out

    @staticmethod
    def _algorithm(params, name="EncryptionAlgorithm"):
        if params.get(name, SYMMETRIC) != SYMMETRIC:
            raise KMSError("InvalidKeyUsageException",
                           "The emulator's keys support only SYMMETRIC_DEFAULT.")

    # -- keys ------------------------------------------------------------------

    def op_CreateKey(self, call, p):
        if p.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT" or \
                p.get("KeySpec", SYMMETRIC) != SYMMETRIC or \
                p.get("CustomerMasterKeySpec", SYMMETRIC) != SYMMETRIC:
            raise KMSError("UnsupportedOperationException",
                           "The emulator supports only SYMMETRIC_DEFAULT "
                           "ENCRYPT_DECRYPT keys.")
        if p.get("Origin", "AWS_KMS") != "AWS_KMS" or p.get("MultiRegion"):
            raise KMSError("UnsupportedOperationException",
                           "The emulator supports only single-Region AWS_KMS keys.")
        key_id = str(uuid.uuid4())
        text = p.get("Policy")
        if text is None:
            text = policy.default_policy(self.account)
        else:
            self._check_policy(call, text, p.get("BypassPolicyLockoutSafetyCheck"),
                               self.key_arn(key_id))
        key = {
            "KeyId": key_id,
            "CreationDate": call.now,
            "Description": p.get("Description", ""),
            "KeyState": "Enabled",
            "Policy": text,
            "Materials": [_b64(crypto.new_key_material())],
            "Rotation": {"Enabled": False, "PeriodInDays": None, "Next": None},
            "OnDemandRotationStartDate": None,
            "Tags": p.get("Tags", []),
        }
        call.data["keys"][key_id] = key
        call.txn.dirty = True
        call.key_arn = self.key_arn(key_id)
        return {"KeyMetadata": self.metadata(key)}

    def op_DescribeKey(self, call, p):
        key = self.resolve(call, p["KeyId"], allow_alias=True)
        self.authorize(call, key, "DescribeKey")
        return {"KeyMetadata": self.metadata(key)}

    def op_ListKeys(self, call, p):
        keys = sorted(call.data["keys"].values(), key=lambda k: k["CreationDate"])
        items = [{"KeyId": k["KeyId"], "KeyArn": self.key_arn(k["KeyId"])} for k in keys]
        return self._paginate(items, p, 100, "Keys")

    def _set_state(self, call, p, operation, state):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, operation)
        self.usable(key, allow_disabled=True)
        key["KeyState"] = state
        call.txn.dirty = True
        return {}

    def op_EnableKey(self, call, p):
        return self._set_state(call, p, "EnableKey", "Enabled")

    def op_DisableKey(self, call, p):
        return self._set_state(call, p, "DisableKey", "Disabled")

    def op_ScheduleKeyDeletion(self, call, p):
        key = self.resolve(call, p["KeyId"])
        days = p.get("PendingWindowInDays", 30)
        if not 7 <= days <= 30:
            bound = ("greater than or equal to 7" if days < 7
                     else "less than or equal to 30")
            raise KMSError("ValidationException",
                           f"1 validation error detected: Value '{days}' at "
                           "'pendingWindowInDays' failed to satisfy constraint: "
                           f"Member must have value {bound}")
        self.authorize(call, key, "ScheduleKeyDeletion")
        self.usable(key, allow_disabled=True)
        key["KeyState"] = "PendingDeletion"
        key["DeletionDate"] = call.now + days * DAY
        key["PendingWindowInDays"] = days
        call.txn.dirty = True
        return {"KeyId": self.key_arn(key["KeyId"]), "DeletionDate": key["DeletionDate"],
                "KeyState": "PendingDeletion", "PendingWindowInDays": days}

    def op_CancelKeyDeletion(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "CancelKeyDeletion")
        if key["KeyState"] != "PendingDeletion":
            raise KMSError("KMSInvalidStateException",
                           f"{self.key_arn(key['KeyId'])} is not pending deletion.")
        key["KeyState"] = "Disabled"  # as AWS: a cancelled deletion leaves it disabled
        key.pop("DeletionDate", None)
        key.pop("PendingWindowInDays", None)
        call.txn.dirty = True
        return {"KeyId": self.key_arn(key["KeyId"])}

    # -- rotation --------------------------------------------------------------

    def op_GetKeyRotationStatus(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "GetKeyRotationStatus")
        self.usable(key, allow_disabled=True)
        rotation = key["Rotation"]
        out = {"KeyRotationEnabled": rotation["Enabled"],
               "KeyId": self.key_arn(key["KeyId"])}
        if rotation["Enabled"]:
            out["RotationPeriodInDays"] = rotation["PeriodInDays"]
            out["NextRotationDate"] = rotation["Next"]
        if key.get("OnDemandRotationStartDate"):
            out["OnDemandRotationStartDate"] = key["OnDemandRotationStartDate"]
        return out

    def op_EnableKeyRotation(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "EnableKeyRotation")
        self.usable(key)
        period = p.get("RotationPeriodInDays", 365)
        key["Rotation"] = {"Enabled": True, "PeriodInDays": period,
                           "Next": call.now + period * DAY}
        call.txn.dirty = True
        return {}

    def op_DisableKeyRotation(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "DisableKeyRotation")
        self.usable(key)
        key["Rotation"] = {"Enabled": False, "PeriodInDays": None, "Next": None}
        call.txn.dirty = True
        return {}

    def op_RotateKeyOnDemand(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "RotateKeyOnDemand")
        self.usable(key)
        self._add_material(key)
        key["OnDemandRotationStartDate"] = call.now
        call.txn.dirty = True
        return {"KeyId": self.key_arn(key["KeyId"])}

    # -- policies --------------------------------------------------------------

    @staticmethod
    def _policy_name(p):
        name = p.get("PolicyName", "default")
        if name != "default":
            raise KMSError("NotFoundException", f"No such policy exists: {name}")

    def op_PutKeyPolicy(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self._policy_name(p)
        self.authorize(call, key, "PutKeyPolicy")
        self.usable(key, allow_disabled=True)
        self._check_policy(call, p["Policy"], p.get("BypassPolicyLockoutSafetyCheck"),
                           self.key_arn(key["KeyId"]))
        key["Policy"] = p["Policy"]
        call.txn.dirty = True
        return {}

    def op_GetKeyPolicy(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self._policy_name(p)
        self.authorize(call, key, "GetKeyPolicy")
        return {"Policy": key["Policy"], "PolicyName": "default"}

    # -- aliases ---------------------------------------------------------------

    def _alias_name(self, call, name, must_exist):
        if not name.startswith("alias/"):
            raise KMSError("ValidationException",
                           'Alias must start with the prefix "alias/". Please see '
                           "https://docs.aws.amazon.com/kms/latest/developerguide/"
                           "kms-alias.html")
        if name.startswith("alias/aws/"):
            raise KMSError("NotAuthorizedException" if must_exist else
                           "InvalidAliasNameException",
                           "Alias names starting with alias/aws/ are reserved "
                           "for AWS managed keys.")
        alias = call.data["aliases"].get(name)
        if must_exist and alias is None:
            raise KMSError("NotFoundException",
                           f"Alias {self.alias_arn(name)} is not found.")
        return alias

    def op_CreateAlias(self, call, p):
        name = p["AliasName"]
        existing = self._alias_name(call, name, must_exist=False)
        key = self.resolve(call, p["TargetKeyId"])
        self.authorize(call, key, "CreateAlias")
        if existing is not None:
            raise KMSError("AlreadyExistsException",
                           f"An alias with the name {self.alias_arn(name)} already exists")
        if key["KeyState"] == "PendingDeletion":
            self.usable(key)
        call.data["aliases"][name] = {"TargetKeyId": key["KeyId"],
                                      "CreationDate": call.now,
                                      "LastUpdatedDate": call.now}
        call.txn.dirty = True
        return {}

    def op_UpdateAlias(self, call, p):
        alias = self._alias_name(call, p["AliasName"], must_exist=True)
        old = call.data["keys"].get(alias["TargetKeyId"])
        key = self.resolve(call, p["TargetKeyId"])
        if old is not None:
            self.authorize(call, old, "UpdateAlias")
        self.authorize(call, key, "UpdateAlias")
        if key["KeyState"] == "PendingDeletion":
            self.usable(key)
        alias["TargetKeyId"] = key["KeyId"]
        alias["LastUpdatedDate"] = call.now
        call.txn.dirty = True
        return {}

    def op_DeleteAlias(self, call, p):
        name = p["AliasName"]
        alias = self._alias_name(call, name, must_exist=True)
        key = call.data["keys"].get(alias["TargetKeyId"])
        if key is not None:
            call.key_arn = self.key_arn(key["KeyId"])
            self.authorize(call, key, "DeleteAlias")
        del call.data["aliases"][name]
        call.txn.dirty = True
        return {}

    def op_ListAliases(self, call, p):
        target = None
        if "KeyId" in p:
            target = self.resolve(call, p["KeyId"])["KeyId"]
        items = []
        for name, alias in sorted(call.data["aliases"].items()):
            if target is not None and alias["TargetKeyId"] != target:
                continue
            items.append({"AliasName": name, "AliasArn": self.alias_arn(name),
                          "TargetKeyId": alias["TargetKeyId"],
                          "CreationDate": alias["CreationDate"],
                          "LastUpdatedDate": alias["LastUpdatedDate"]})
        return self._paginate(items, p, 50, "Aliases")

    # -- cryptography ----------------------------------------------------------

    def _seal(self, key, plaintext, context):
        materials = self._materials(key)
        return crypto.seal(key["KeyId"], len(materials) - 1, materials[-1],
                           plaintext, context)

    def _open(self, call, blob, context, key_ref, operation):
        """Find and check the key of a ciphertext blob, then decrypt it."""
        blob_key_id, version = crypto.peek(blob)
        if key_ref is not None:
            key = self.resolve(call, key_ref, allow_alias=True)
            if key["KeyId"] != blob_key_id:
                raise KMSError("IncorrectKeyException",
                               "The key ID in the request does not identify a KMS "
                               "key that can perform this operation.")
        else:
            key = call.data["keys"].get(blob_key_id)
            if key is None:
                if blob_key_id in call.data.get("deleted_keys", []):
                    raise self._not_found(blob_key_id)
                raise KMSError("InvalidCiphertextException", "")
            call.key_arn = self.key_arn(key["KeyId"])
        self.authorize(call, key, operation, context)
        self.usable(key)
        materials = self._materials(key)
        if version >= len(materials):
            raise KMSError("InvalidCiphertextException", "")
        return key, crypto.unseal(blob, materials[version], context)

    def op_Encrypt(self, call, p):
        self._algorithm(p)
        context = call.encryption_context = p.get("EncryptionContext", {})
        key = self.resolve(call, p["KeyId"], allow_alias=True)
        self.authorize(call, key, "Encrypt", context)
        self.usable(key)
        return {"CiphertextBlob": _b64(self._seal(key, p["Plaintext"], context)),
                "KeyId": self.key_arn(key["KeyId"]),
                "EncryptionAlgorithm": SYMMETRIC}

    def op_Decrypt(self, call, p):
        self._algorithm(p)
        context = call.encryption_context = p.get("EncryptionContext", {})
        key, plaintext = self._open(call, p["CiphertextBlob"], context,
                                    p.get("KeyId"), "Decrypt")
        return {"KeyId": self.key_arn(key["KeyId"]), "Plaintext": _b64(plaintext),
                "EncryptionAlgorithm": SYMMETRIC}

    def _data_key(self, call, p, operation):
        spec, count = p.get("KeySpec"), p.get("NumberOfBytes")
        if (spec is None) == (count is None):
            raise KMSError("ValidationException",
                           "Please specify either number of bytes or key spec.")
        size = count if count is not None else {"AES_128": 16, "AES_256": 32}[spec]
        context = call.encryption_context = p.get("EncryptionContext", {})
        key = self.resolve(call, p["KeyId"], allow_alias=True)
        self.authorize(call, key, operation, context)
        self.usable(key)
        plaintext = os.urandom(size)
        return plaintext, {"CiphertextBlob": _b64(self._seal(key, plaintext, context)),
                           "KeyId": self.key_arn(key["KeyId"])}

    def op_GenerateDataKey(self, call, p):
        plaintext, out = self._data_key(call, p, "GenerateDataKey")
        out["Plaintext"] = _b64(plaintext)
        return out

    def op_GenerateDataKeyWithoutPlaintext(self, call, p):
        return self._data_key(call, p, "GenerateDataKeyWithoutPlaintext")[1]

    def op_ReEncrypt(self, call, p):
        self._algorithm(p, "SourceEncryptionAlgorithm")
        self._algorithm(p, "DestinationEncryptionAlgorithm")
        source_context = p.get("SourceEncryptionContext", {})
        dest_context = p.get("DestinationEncryptionContext", {})
        call.encryption_context = {"source": source_context,
                                   "destination": dest_context}
        dest = self.resolve(call, p["DestinationKeyId"], allow_alias=True)
        source, plaintext = self._open(call, p["CiphertextBlob"], source_context,
                                       p.get("SourceKeyId"), "ReEncryptFrom")
        call.key_arn = self.key_arn(dest["KeyId"])
        self.authorize(call, dest, "ReEncryptTo", dest_context)
        self.usable(dest)
        return {"CiphertextBlob": _b64(self._seal(dest, plaintext, dest_context)),
                "SourceKeyId": self.key_arn(source["KeyId"]),
                "KeyId": self.key_arn(dest["KeyId"]),
                "SourceEncryptionAlgorithm": SYMMETRIC,
                "DestinationEncryptionAlgorithm": SYMMETRIC}

    # -- grants ----------------------------------------------------------------

    # Grant operations a symmetric encryption key does not support (AWS: "you cannot
    # create a grant for a symmetric encryption KMS key that allows the Sign
    # operation ... KMS returns a ValidationError exception").
    NOT_SYMMETRIC = frozenset(("Sign", "Verify", "GetPublicKey", "GenerateMac",
                               "VerifyMac", "DeriveSharedSecret"))

    @staticmethod
    def _grant_tokens(grant):
        return [grant["GrantToken"]] + grant.get("GrantTokens", [])

    def _grant_view(self, grant):
        out = {k: v for k, v in grant.items()
               if k not in ("GrantToken", "GrantTokens") and v is not None}
        out["KeyId"] = self.key_arn(grant["KeyId"])
        out["IssuingAccount"] = f"arn:aws:iam::{self.account}:root"
        return out

    def op_CreateGrant(self, call, p):
        key = self.resolve(call, p["KeyId"])
        for field in ("GranteePrincipal", "RetiringPrincipal"):
            if field in p and not p[field].startswith("arn:aws:"):
                raise KMSError("ValidationException",
                               f"{field} is invalid: {p[field]}")
        unsupported = sorted(set(p["Operations"]) & self.NOT_SYMMETRIC)
        if unsupported:
            raise KMSError("ValidationException",
                           f"Grant operations {unsupported} are not supported by "
                           f"{self.key_arn(key['KeyId'])}: it is a symmetric "
                           "encryption KMS key.")
        constraints = p.get("Constraints")
        for kind, pairs in (constraints or {}).items():
            if len(pairs) > 8 or any(len(v) > 384 for v in pairs.values()):
                raise KMSError("ValidationException",
                               f"{kind} holds at most 8 pairs, each value at most "
                               "384 characters.")
        self.authorize(call, key, "CreateGrant", new_constraints=constraints)
        self.usable(key, allow_disabled=True)
        wanted = {"KeyId": key["KeyId"], "GranteePrincipal": p["GranteePrincipal"],
                  "RetiringPrincipal": p.get("RetiringPrincipal"),
                  "Operations": p["Operations"], "Constraints": constraints,
                  "Name": p.get("Name")}
        token = "AQpA" + base64.urlsafe_b64encode(os.urandom(48)).decode()
        # AWS: a repeated CreateGrant with the same name and content returns the
        # original GrantId; "the returned grant token is unique with every CreateGrant
        # request ... All grant tokens for the same grant ID can be used interchangeably."
        for grant in call.data["grants"].values():
            if wanted["Name"] and all(grant.get(k) == v for k, v in wanted.items()):
                grant.setdefault("GrantTokens", []).append(token)
                call.txn.dirty = True
                return {"GrantToken": token, "GrantId": grant["GrantId"]}
        grant_id = secrets.token_hex(32)
        grant = dict(wanted, GrantId=grant_id, CreationDate=call.now, GrantToken=token)
        call.data["grants"][grant_id] = grant
        call.txn.dirty = True
        return {"GrantToken": grant["GrantToken"], "GrantId": grant_id}

    def op_ListGrants(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "ListGrants")
        grants = sorted((g for g in call.data["grants"].values()
                         if g["KeyId"] == key["KeyId"]),
                        key=lambda g: g["CreationDate"])
        if "GrantId" in p:
            grants = [g for g in grants if g["GrantId"] == p["GrantId"]]
        if "GranteePrincipal" in p:
            grants = [g for g in grants if g["GranteePrincipal"] == p["GranteePrincipal"]]
        return self._paginate([self._grant_view(g) for g in grants], p, 50, "Grants")

    def op_RevokeGrant(self, call, p):
        key = self.resolve(call, p["KeyId"])
        self.authorize(call, key, "RevokeGrant")
        grant = call.data["grants"].get(p["GrantId"])
        if grant is None or grant["KeyId"] != key["KeyId"]:
            raise KMSError("NotFoundException", f"Grant ID {p['GrantId']} not found")
        del call.data["grants"][p["GrantId"]]
        call.txn.dirty = True
        return {}

    def op_RetireGrant(self, call, p):
        grant = None
        if "GrantToken" in p:
            grant = next((g for g in call.data["grants"].values()
                          if p["GrantToken"] in self._grant_tokens(g)), None)
            if grant is None:
                raise KMSError("InvalidGrantTokenException", "Invalid grant token")
        elif "KeyId" in p and "GrantId" in p:
            key = self.resolve(call, p["KeyId"])
            grant = call.data["grants"].get(p["GrantId"])
            if grant is None or grant["KeyId"] != key["KeyId"]:
                raise KMSError("NotFoundException",
                               f"Grant ID {p['GrantId']} not found")
        else:
            raise KMSError("ValidationException",
                           "Either GrantToken or KeyId and GrantId must be given.")
        key = call.data["keys"][grant["KeyId"]]
        call.key_arn = self.key_arn(key["KeyId"])
        # AWS: the retiring principal, a grantee holding RetireGrant, or a
        # principal the key policy allows kms:RetireGrant may retire a grant. A grant
        # naming a role covers the role's sessions, as in AWS.
        if not policy.is_principal(grant.get("RetiringPrincipal"), call.principal) and not (
                policy.is_principal(grant["GranteePrincipal"], call.principal)
                and "RetireGrant" in grant["Operations"]):
            policy.authorize(key["Policy"], [], call.principal, "RetireGrant",
                             call.key_arn)
        del call.data["grants"][grant["GrantId"]]
        call.txn.dirty = True
        return {}
