"""KMS error type and the HTTP status code AWS returns for each error.

botocore's JSON model does not carry status codes, so they are listed here as
the AWS Smithy model for KMS gives them (409 for state conflicts, 404 for
NotFound, 500/503 for the service-side retryable errors, 400 for the rest).
"""

_STATUS = {
    "AlreadyExistsException": 409,
    "ConflictException": 409,
    "DisabledException": 409,
    "KMSInvalidStateException": 409,
    "NotFoundException": 404,
    "KMSInternalException": 500,
    "KeyUnavailableException": 500,
    "DependencyTimeoutException": 503,
    # Authentication and request-level errors of the AWS JSON protocol.
    "AccessDeniedException": 400,
    "UnrecognizedClientException": 400,
    "InvalidSignatureException": 400,
    "ExpiredTokenException": 400,
    "IncompleteSignatureException": 400,
    "MissingAuthenticationTokenException": 400,
    "ThrottlingException": 400,
    "ValidationException": 400,
}

# Errors that AWS reports with the Coral service namespace in "__type".
# Clients must strip everything up to '#'; doing it here keeps them honest.
_NAMESPACED = {
    "UnknownOperationException": "com.amazon.coral.service#",
    "SerializationException": "com.amazon.coral.service#",
}


def status_of(error_type):
    """HTTP status for an error type (400 unless listed above)."""
    return _STATUS.get(error_type, 400)


class KMSError(Exception):
    """An error answered as `{"__type": ..., "message": ...}`."""

    def __init__(self, error_type, message=""):
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    @property
    def status(self):
        return status_of(self.error_type)

    def body(self):
        out = {"__type": _NAMESPACED.get(self.error_type, "") + self.error_type}
        if self.message:
            out["message"] = self.message
        return out
