"""Google's error shape: {"error": {"code": HTTP, "message": ..., "status": CODE}}.

The HTTP status of each canonical code is the one Google's REST front end maps it to
(google.rpc.Code).
"""

STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class GoogleError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def http_status(self):
        return STATUS[self.status]

    def body(self):
        return {"error": {"code": self.http_status, "message": self.message,
                          "status": self.status}}


def invalid(message):
    return GoogleError("INVALID_ARGUMENT", message)
