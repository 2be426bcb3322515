"""Injected faults, kept in the state file so every process serving it sees them.

A fault is {"operation": "Decrypt" | "Token" | "Metadata" | "*", "fault": KIND,
"count": N (-1: until cleared), "latency_ms": N, "resource": NAME or null}. Each
matching request consumes one count; the first matching fault wins. With "resource",
only requests whose resource name is NAME or below it match. "Token" is the OAuth token
endpoint, "Metadata" the metadata server's token; "*" matches KMS methods only.
"""

from .errors import GoogleError

KINDS = {
    "latency": "sleep latency_ms, then answer normally",
    "unavailable": "503 UNAVAILABLE",
    "internal": "500 INTERNAL",
    "deadline_exceeded": "504 DEADLINE_EXCEEDED",
    "resource_exhausted": "429 RESOURCE_EXHAUSTED",
    "unauthenticated": "401 UNAUTHENTICATED",
    "http500": "500 with a text/html body (a broken proxy or load balancer)",
    "http503": "503 with a text/html body",
    "malformed": "200 with a body that is not JSON",
    "reset": "close the TCP connection with RST, no response",
    "timeout": "sleep latency_ms (default 30000), then close without a response",
}

GOOGLE_ERRORS = {
    "unavailable": ("UNAVAILABLE", "The service is currently unavailable."),
    "internal": ("INTERNAL", "Internal error encountered."),
    "deadline_exceeded": ("DEADLINE_EXCEEDED", "Deadline expired before operation could "
                          "complete."),
    "resource_exhausted": ("RESOURCE_EXHAUSTED", "Quota exceeded for quota metric "
                           "'Cryptographic requests' and limit 'Cryptographic requests per "
                           "minute' of service 'cloudkms.googleapis.com'."),
    "unauthenticated": ("UNAUTHENTICATED", "Request had invalid authentication "
                        "credentials."),
}


def parse(spec):
    if not isinstance(spec, dict):
        raise GoogleError("INVALID_ARGUMENT", "a fault must be a JSON object")
    kind = spec.get("fault")
    if kind not in KINDS:
        raise GoogleError("INVALID_ARGUMENT",
                          "fault must be one of " + ", ".join(sorted(KINDS)))
    operation = spec.get("operation", "*")
    count = spec.get("count", 1)
    latency = spec.get("latency_ms")
    resource = spec.get("resource")
    if not isinstance(operation, str) or not operation:
        raise GoogleError("INVALID_ARGUMENT", "operation must be a method name or '*'")
    if isinstance(count, bool) or not isinstance(count, int) or count == 0 or count < -1:
        raise GoogleError("INVALID_ARGUMENT", "count must be a positive integer or -1")
    if latency is not None and (isinstance(latency, bool) or
                                not isinstance(latency, (int, float)) or latency < 0):
        raise GoogleError("INVALID_ARGUMENT", "latency_ms must be a number >= 0")
    if kind == "latency" and latency is None:
        raise GoogleError("INVALID_ARGUMENT", "a latency fault needs latency_ms")
    if resource is not None and (not isinstance(resource, str) or not resource):
        raise GoogleError("INVALID_ARGUMENT", "resource must be a resource name")
    return {"operation": operation, "fault": kind, "count": count, "latency_ms": latency,
            "resource": resource}


def take(txn, operation, resource):
    faults = txn.data.get("faults") or []
    for index, fault in enumerate(faults):
        if fault["operation"] == "*":
            if operation in ("Token", "Metadata"):
                continue
        elif fault["operation"] != operation:
            continue
        want = fault.get("resource")
        if want and not (resource and (resource == want or resource.startswith(want + "/"))):
            continue
        if fault["count"] > 0:
            fault["count"] -= 1
            if fault["count"] == 0:
                del faults[index]
            txn.dirty = True
        return dict(fault)
    return None
