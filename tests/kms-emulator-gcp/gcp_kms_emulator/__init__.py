"""dmbyok's Google Cloud KMS emulator (test infrastructure only, never production).

Modules:
  errors  - GoogleError and the HTTP status of every canonical status code
  store   - the JSON state file (key rings, keys, versions, IAM, tokens, faults)
  crypto  - CRC32C and the emulator's ciphertext format (AES-256-GCM)
  iam     - roles, policies (project, key ring, key) and deny rules
  oauth   - access tokens, the service-account JWT bearer grant, service-account keys
  kms     - the Cloud KMS v1 REST resources and methods
  faults  - injected faults (latency, UNAVAILABLE, resets, hangs, ...)
  server  - the HTTP(S) server: KMS, OAuth token endpoint, GCE metadata, control API
"""

DEFAULT_PROJECT = "dmbyok-test"
ADMIN = "user:admin@example.com"
HOST_SA = "dmbyok-host@dmbyok-test.iam.gserviceaccount.com"
OTHER_SA = "dmbyok-other@dmbyok-test.iam.gserviceaccount.com"
