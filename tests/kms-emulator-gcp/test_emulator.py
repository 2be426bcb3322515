#!/usr/bin/python3
"""The emulator's own checks, over HTTP (stdlib + python3-cryptography): Google's error
shape and codes, AAD and key binding of ciphertexts, CRC32C, IAM inheritance and deny
rules, the JWT bearer grant's refusals, the metadata server's header rule, faults, and the
control client. gcloud-level fidelity is test-gcloud's job.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from gcp_kms_emulator import crypto  # noqa: E402

RING = "projects/p/locations/global/keyRings/r"
HOST = "dmbyok-host@dmbyok-test.iam.gserviceaccount.com"


def b64(data):
    return base64.b64encode(data).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class EmulatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.proc = subprocess.Popen(
            [os.path.join(HERE, "gcp-kms-emulator"), "--listen", "127.0.0.1:0", "--state",
             os.path.join(cls.tmp.name, "state.json"), "--audit-log",
             os.path.join(cls.tmp.name, "audit.log")], stdout=subprocess.PIPE, text=True)
        cls.url = cls.proc.stdout.readline().strip().rsplit(" ", 1)[1]
        cls.call("POST", f"{RING.rsplit('/keyRings', 1)[0]}/keyRings?keyRingId=r", {})
        for k in ("a", "b"):
            cls.call("POST", f"{RING}/cryptoKeys?cryptoKeyId={k}",
                     {"purpose": "ENCRYPT_DECRYPT"})

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait()
        cls.tmp.cleanup()

    @classmethod
    def http(cls, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        req = urllib.request.Request(cls.url + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers

    @classmethod
    def call(cls, method, path, body=None, token="admin-token"):
        status, data, _ = cls.http(method, "/v1/" + path, body,
                                   {"Authorization": "Bearer " + token,
                                    "Content-Type": "application/json"})
        return status, json.loads(data or b"{}")

    def assertGoogleError(self, got, http, status, text=""):
        code, body = got
        self.assertEqual(code, http, body)
        self.assertEqual(set(body), {"error"})
        self.assertEqual(body["error"]["code"], http)
        self.assertEqual(body["error"]["status"], status)
        self.assertIn(text, body["error"]["message"])

    def encrypt(self, key, pt, aad=b"", token="host-token"):
        return self.call("POST", f"{RING}/cryptoKeys/{key}:encrypt",
                         {"plaintext": b64(pt), "additionalAuthenticatedData": b64(aad)}, token)

    def test_ciphertext_binding(self):
        code, out = self.encrypt("a", b"k" * 64, b'{"v":"1"}')
        self.assertEqual(code, 200, out)
        self.assertEqual(out["name"], f"{RING}/cryptoKeys/a/cryptoKeyVersions/1")
        self.assertEqual(int(out["ciphertextCrc32c"]),
                         crypto.crc32c(base64.b64decode(out["ciphertext"])))
        self.assertFalse(out["verifiedPlaintextCrc32c"])  # none was sent
        ct = out["ciphertext"]
        code, dec = self.call("POST", f"{RING}/cryptoKeys/a:decrypt",
                              {"ciphertext": ct, "additionalAuthenticatedData": b64(b'{"v":"1"}')},
                              "host-token")
        self.assertEqual(base64.b64decode(dec["plaintext"]), b"k" * 64)
        self.assertTrue(dec["usedPrimary"])
        for key, aad in (("a", b'{"v":"2"}'), ("a", b""), ("b", b'{"v":"1"}')):
            self.assertGoogleError(self.call(
                "POST", f"{RING}/cryptoKeys/{key}:decrypt",
                {"ciphertext": ct, "additionalAuthenticatedData": b64(aad)}, "host-token"),
                400, "INVALID_ARGUMENT", "Decryption failed")
        # The other key's material would not open it even with this key's header.
        blob = bytearray(base64.b64decode(ct))
        blob[-1] ^= 1
        self.assertGoogleError(self.call(
            "POST", f"{RING}/cryptoKeys/a:decrypt",
            {"ciphertext": b64(bytes(blob)), "additionalAuthenticatedData": b64(b'{"v":"1"}')},
            "host-token"), 400, "INVALID_ARGUMENT")

    def test_checksums(self):
        self.assertGoogleError(self.call(
            "POST", f"{RING}/cryptoKeys/a:encrypt",
            {"plaintext": b64(b"x"), "plaintextCrc32c": "1"}, "host-token"),
            400, "INVALID_ARGUMENT",
            "The checksum in field plaintext_crc32c did not match the data in field plaintext.")
        code, out = self.call("POST", f"{RING}/cryptoKeys/a:encrypt",
                              {"plaintext": b64(b"x"), "plaintextCrc32c":
                               str(crypto.crc32c(b"x"))}, "host-token")
        self.assertTrue(out["verifiedPlaintextCrc32c"])
        self.assertEqual(crypto.crc32c(b"123456789"), 0xE3069283)

    def test_authentication_and_iam(self):
        self.assertGoogleError(self.call("GET", f"{RING}/cryptoKeys/a", token="nope"),
                               401, "UNAUTHENTICATED")
        self.assertGoogleError(self.call("GET", f"{RING}/cryptoKeys/a", token="expired-token"),
                               401, "UNAUTHENTICATED")
        status, _, headers = self.http("GET", f"/v1/{RING}/cryptoKeys/a")
        self.assertEqual(status, 401)
        self.assertIn("Bearer", headers["WWW-Authenticate"])
        # The host may use and view keys (project policy), not administer them.
        self.assertGoogleError(self.call("POST", f"{RING}/cryptoKeys/a/cryptoKeyVersions", {},
                                         "host-token"), 403, "PERMISSION_DENIED",
                               "cloudkms.cryptoKeyVersions.create")
        # A missing key: NOT_FOUND for who may view, PERMISSION_DENIED for who may not.
        self.assertGoogleError(self.call("GET", f"{RING}/cryptoKeys/zz", token="host-token"),
                               404, "NOT_FOUND")
        self.assertGoogleError(self.call("GET", f"{RING}/cryptoKeys/zz", token="other-token"),
                               403, "PERMISSION_DENIED", "(or it may not exist)")
        # A key ring binding is inherited by its keys.
        self.assertEqual(self.encrypt("b", b"x", token="other-token")[0], 403)
        code, policy = self.call("GET", f"{RING}:getIamPolicy")
        policy["bindings"] = [{"role": "roles/cloudkms.cryptoKeyEncrypter",
                               "members": ["serviceAccount:dmbyok-other@dmbyok-test.iam."
                                           "gserviceaccount.com"]}]
        self.assertEqual(self.call("POST", f"{RING}:setIamPolicy", {"policy": policy})[0], 200)
        self.assertEqual(self.encrypt("b", b"x", token="other-token")[0], 200)
        # A stale etag is refused (read-modify-write).
        self.assertGoogleError(self.call("POST", f"{RING}:setIamPolicy", {"policy": policy}),
                               409, "ABORTED")
        # Deny rules beat allows.
        self.http("POST", "/_emulator/deny", {"principal": "serviceAccount:" + HOST,
                                              "permissions": [
                                                  "cloudkms.cryptoKeyVersions.useToEncrypt"]})
        self.assertEqual(self.encrypt("b", b"x")[0], 403)
        self.http("DELETE", "/_emulator/deny")
        self.assertEqual(self.encrypt("b", b"x")[0], 200)

    def jwt(self, key, claims, kid):
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
        body = b64url(json.dumps(claims).encode())
        sig = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{body}.{b64url(sig)}"

    def grant(self, assertion):
        form = ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
                + assertion).encode()
        status, data, _ = self.http("POST", "/token", raw=form, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        return status, json.loads(data)

    def test_jwt_bearer_grant(self):
        _, data, _ = self.http("POST", "/_emulator/service-account-keys", {"email": HOST})
        sa = json.loads(data)
        self.assertEqual(sa["token_uri"], self.url + "/token")
        key = serialization.load_pem_private_key(sa["private_key"].encode(), None)
        now = int(time.time())
        good = {"iss": HOST, "aud": sa["token_uri"], "iat": now, "exp": now + 3600,
                "scope": "https://www.googleapis.com/auth/cloud-platform"}
        status, out = self.grant(self.jwt(key, good, sa["private_key_id"]))
        self.assertEqual(status, 200, out)
        self.assertEqual(out["token_type"], "Bearer")
        self.assertEqual(self.call("GET", f"{RING}/cryptoKeys/a", token=out["access_token"])[0],
                         200)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for claims, signer, kid, want in (
                (good, other, sa["private_key_id"], "Invalid JWT Signature."),
                (dict(good, exp=now - 10), key, sa["private_key_id"], "short-lived"),
                (dict(good, exp=now + 7200), key, sa["private_key_id"], "short-lived"),
                (dict(good, aud="https://elsewhere/token"), key, sa["private_key_id"],
                 "audience"),
                (dict(good, iss="nobody@x"), key, sa["private_key_id"], "account not found")):
            status, out = self.grant(self.jwt(signer, claims, kid))
            self.assertEqual(status, 400, out)
            self.assertEqual(out["error"], "invalid_grant")
            self.assertIn(want, out["error_description"])

    def test_metadata_server(self):
        path = "/computeMetadata/v1/instance/service-accounts/default/token"
        status, _, headers = self.http("GET", path)
        self.assertEqual(status, 403)
        self.assertEqual(headers["Metadata-Flavor"], "Google")
        status, _, _ = self.http("GET", path, headers={"Metadata-Flavor": "Google",
                                                       "X-Forwarded-For": "1.2.3.4"})
        self.assertEqual(status, 403)
        status, data, _ = self.http("GET", path, headers={"Metadata-Flavor": "Google"})
        token = json.loads(data)
        self.assertEqual(status, 200)
        self.assertLessEqual(token["expires_in"], 3599)
        self.assertEqual(self.call("GET", f"{RING}/cryptoKeys/a",
                                   token=token["access_token"])[0], 200)

    def test_versions_and_faults(self):
        self.call("POST", f"{RING}/cryptoKeys?cryptoKeyId=v", {"purpose": "ENCRYPT_DECRYPT"})
        name = f"{RING}/cryptoKeys/v"
        ctl = [os.path.join(HERE, "gcp-emulatorctl"), "--url", self.url]
        subprocess.run(ctl + ["create-version", name, "--primary"], check=True,
                       capture_output=True)
        subprocess.run(ctl + ["disable", name + "/cryptoKeyVersions/2"], check=True,
                       capture_output=True)
        self.assertGoogleError(self.encrypt("v", b"x"), 400, "FAILED_PRECONDITION",
                               "cryptoKeyVersions/2 is not enabled, current state is: DISABLED.")
        subprocess.run(ctl + ["set-primary", name, "1"], check=True, capture_output=True)
        self.assertEqual(self.encrypt("v", b"x")[0], 200)
        self.assertGoogleError(self.call("PATCH", f"{name}/cryptoKeyVersions/1?updateMask=state",
                                         {"state": "DESTROYED"}), 400, "INVALID_ARGUMENT")
        subprocess.run(ctl + ["fault", "Encrypt", "resource_exhausted", "--resource", name],
                       check=True, capture_output=True)
        self.assertEqual(self.encrypt("a", b"x")[0], 200)  # another key: no fault
        self.assertGoogleError(self.encrypt("v", b"x"), 429, "RESOURCE_EXHAUSTED")
        self.assertEqual(self.encrypt("v", b"x")[0], 200)  # consumed
        with open(os.path.join(self.tmp.name, "audit.log")) as f:
            faulted = [json.loads(line) for line in f if '"fault"' in line]
        self.assertEqual(faulted[-1]["result"], "fault:resource_exhausted")


if __name__ == "__main__":
    unittest.main(verbosity=2)
