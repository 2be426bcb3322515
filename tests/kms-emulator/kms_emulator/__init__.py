"""dmbyok's AWS KMS emulator (test infrastructure only, never production).

Modules:
  errors  - the KMSError exception and the HTTP status of every error type
  model   - loads botocore's KMS service model and validates request bodies
  sigv4   - verifies AWS Signature Version 4 with botocore's signer
  store   - the JSON state file (keys, aliases, grants, principals, faults)
  crypto  - the emulator's ciphertext blob format (AES-256-GCM)
  policy  - key policy and grant evaluation
  ops     - the KMS operations themselves
  sts     - STS: AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity, roles
  faults  - injected faults (latency, throttling, resets, ...)
  server  - the HTTP(S) server: KMS, STS, IMDSv2, container credentials, control
"""

ACCOUNT_ID = "111122223333"
DEFAULT_REGION = "us-east-1"
