"""Injected faults, kept in the state file so every emulator process serving
the same state sees them.

A fault is {"operation": "Decrypt" or "*", "fault": KIND, "count": N,
"latency_ms": N}.  Each matching KMS request consumes one count (-1 means
until cleared); the first matching fault in the list wins.
"""

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
    return {"operation": operation, "fault": kind, "count": count,
            "latency_ms": latency}


def take(txn, operation):
    """Consume and return the first fault matching `operation`, or None."""
    faults = txn.data.get("faults") or []
    for index, fault in enumerate(faults):
        if fault["operation"] not in ("*", operation):
            continue
        if fault["count"] > 0:
            fault["count"] -= 1
            if fault["count"] == 0:
                del faults[index]
            txn.dirty = True
        return dict(fault)
    return None
