"""dmbyok's Azure Key Vault emulator (test infrastructure only, never production).

Modules:
  state    - the JSON state file (tenant, apps, identities, tokens, vaults, faults)
  keys     - Key Vault keys: versions, RSA-OAEP-256 / A256KW wrap and unwrap, JWK
  identity - Microsoft Entra token endpoint, OpenID metadata, IMDS, bearer validation
  server   - HTTP(S) on one port (TLS sniffed), an HTTP CONNECT proxy that terminates TLS
             for *.vault.azure.net and login.microsoftonline.com, faults, audit, control API
"""

TENANT = "5f0c3b6e-9a41-4d8e-b2a7-0d1e2f3a4b5c"
ADMIN_APP = "0a1b2c3d-0000-4000-8000-00000000ad01"
HOST_APP = "0a1b2c3d-0000-4000-8000-0000000000a1"
OTHER_APP = "0a1b2c3d-0000-4000-8000-0000000000b2"
WORKLOAD_APP = "0a1b2c3d-0000-4000-8000-0000000000c3"
MI_SYSTEM_OID = "7e000000-0000-4000-8000-00000000005a"
MI_USER_CLIENT = "7e000000-0000-4000-8000-0000000000c1"
MI_USER_OID = "7e000000-0000-4000-8000-0000000000d1"
FEDERATED_ISSUER = "https://oidc.dmbyok-test.example/"
FEDERATED_SUBJECT = "system:serviceaccount:dmbyok:dmbyokd"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
LOCATION = "westeurope"


class KvError(Exception):
    """A Key Vault error: {"error": {"code", "message", "innererror": {"code"}}}."""

    def __init__(self, status, code, message, inner=None, headers=()):
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = list(headers)

    def body(self):
        error = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}
