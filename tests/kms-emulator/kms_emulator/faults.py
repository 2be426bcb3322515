"""Injected faults, kept in the state file so every emulator process serving
the same state sees them.

A fault is {"operation": "Decrypt" or "*", "fault": KIND, "count": N,
"latency_ms": N, "key_id": ID or None}.  Each matching KMS request consumes
one count (-1 means until cleared); the first matching fault in the list wins.
With key_id (a key id or key ARN), only requests for that key match: the
request's KeyId (id or ARN; an alias never matches), else the key named in its
CiphertextBlob.
"""

import base64
import binascii
import json

from .errors import KMSError

KINDS = {
    "latency": "sleep latency_ms, then answer normally",
    "http500": "HTTP 500 with a non-AWS text body (a broken proxy/LB)",
    "http503": "HTTP 503 with a non-AWS text body (Service Unavailable)",
    "throttle": "ThrottlingException (400)",
    "reset": "close the TCP connection with RST, no response",
    "timeout": "sleep latency_ms (default 30000) then close, no response",
    "malformed": "HTTP 200 with a body that is not JSON",
    "internal": "KMSInternalException (500)",
    "dependency_timeout": "DependencyTimeoutException (503)",
    "key_unavailable": "KeyUnavailableException (500)",
}

# Faults answered as ordinary AWS JSON errors.
AWS_ERRORS = {
    "throttle": ("ThrottlingException", "Rate exceeded"),
    "internal": ("KMSInternalException",
                 "The request was rejected because an internal exception occurred."),
    "dependency_timeout": ("DependencyTimeoutException",
                           "The system timed out while trying to fulfill the request."),
    "key_unavailable": ("KeyUnavailableException",
                        "The request was rejected because the specified KMS key "
                        "was not available."),
}


def parse(spec):
    """Check a fault specification from the control API; return it normalised."""
    if not isinstance(spec, dict):
        raise KMSError("ValidationException", "fault must be a JSON object")
    kind = spec.get("fault")
    if kind not in KINDS:
        raise KMSError("ValidationException",
                       f"fault must be one of {', '.join(sorted(KINDS))}")
    operation = spec.get("operation", "*")
    count = spec.get("count", 1)
    latency = spec.get("latency_ms")
    if not isinstance(operation, str) or not operation:
        raise KMSError("ValidationException", "operation must be a name or '*'")
    if isinstance(count, bool) or not isinstance(count, int) or count == 0 or count < -1:
        raise KMSError("ValidationException", "count must be a positive integer or -1")
    if latency is not None and (isinstance(latency, bool)
                                or not isinstance(latency, (int, float)) or latency < 0):
        raise KMSError("ValidationException", "latency_ms must be a number >= 0")
    if kind == "latency" and latency is None:
        raise KMSError("ValidationException", "a latency fault needs latency_ms")
    key_id = spec.get("key_id")
    if key_id is not None and (not isinstance(key_id, str) or not _key_uuid(key_id)):
        raise KMSError("ValidationException", "key_id must be a key id or key ARN")
    return {"operation": operation, "fault": kind, "count": count,
            "latency_ms": latency, "key_id": _key_uuid(key_id) if key_id else None}


def _key_uuid(key_id):
    """The key id in a key id or key ARN; None for anything else (an alias)."""
    if key_id.startswith("arn:"):
        resource = key_id.split(":", 5)[-1]
        return resource[4:] if resource.startswith("key/") and len(resource) > 4 else None
    return None if key_id.startswith("alias/") or not key_id else key_id


def request_key(body):
    """The key a KMS request body is for (see the module doc), or None. Lenient: a
    body that is not what the model wants is answered later, not here."""
    try:
        raw = json.loads(body.decode("utf-8") or "{}")
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("KeyId"), str):
        return _key_uuid(raw["KeyId"])
    if isinstance(raw.get("CiphertextBlob"), str):
        try:
            blob = base64.b64decode(raw["CiphertextBlob"], validate=True)
        except (binascii.Error, ValueError):
            return None
        if blob[:5] == b"KMSE\x01" and len(blob) >= 41:
            return blob[5:41].decode("ascii", "replace")
    return None


def take(txn, operation, body=b""):
    """Consume and return the first fault matching `operation` (and, for a fault with
    key_id, the key of the request `body`), or None."""
    faults = txn.data.get("faults") or []
    key_uuid = ...  # worked out once, and only if a fault needs it
    for index, fault in enumerate(faults):
        if fault["operation"] not in ("*", operation):
            continue
        if fault.get("key_id"):
            if key_uuid is ...:
                key_uuid = request_key(body)
            if fault["key_id"] != key_uuid:
                continue
        if fault["count"] > 0:
            fault["count"] -= 1
            if fault["count"] == 0:
                del faults[index]
            txn.dirty = True
        return dict(fault)
    return None
