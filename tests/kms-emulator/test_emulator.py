#!/usr/bin/python3
"""Unit tests of the KMS emulator's internals (stdlib unittest).

Run: /usr/bin/python3 tests/kms-emulator/test_emulator.py
"""

import base64
import datetime
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from kms_emulator import crypto, faults, policy, sigv4, sts  # noqa: E402
from kms_emulator.errors import KMSError  # noqa: E402
from kms_emulator.model import ServiceModel  # noqa: E402
from kms_emulator.server import Emulator, Handler, Server, parse_args  # noqa: E402
from kms_emulator.store import Store, Transaction  # noqa: E402

MODEL = ServiceModel()
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
PRINCIPALS = {"AKIDTEST": {"secret": "s3cret", "arn": "arn:aws:iam::111122223333:user/t"},
              "ASIATEST": {"secret": "s", "arn": "arn:aws:iam::111122223333:role/r",
                           "session_token": "tok"}}


def sign(body, creds=("AKIDTEST", "s3cret", None), region="us-east-1", host="h:1"):
    req = AWSRequest(method="POST", url=f"http://{host}/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "TrentService.ListKeys"})
    SigV4Auth(Credentials(*creds), "kms", region).add_auth(req)
    msg = http.client.HTTPMessage()
    for name, value in req.headers.items():
        msg[name] = value
    msg["Host"] = host
    msg["User-Agent"] = "unsigned/1.0"
    return msg


class CryptoTest(unittest.TestCase):
    def test_roundtrip_and_binding(self):
        material = crypto.new_key_material()
        blob = crypto.seal(KEY_ID, 3, material, b"data", {"b": "2", "a": "1"})
        self.assertEqual(crypto.peek(blob), (KEY_ID, 3))
        self.assertEqual(crypto.unseal(blob, material, {"a": "1", "b": "2"}), b"data")
        for context in ({}, {"a": "1"}, {"a": "1", "b": "3"}):
            with self.assertRaises(KMSError) as err:
                crypto.unseal(blob, material, context)
            self.assertEqual(err.exception.error_type, "InvalidCiphertextException")
        swapped = blob[:41] + (4).to_bytes(4, "big") + blob[45:]
        with self.assertRaises(KMSError):
            crypto.unseal(swapped, material, {"a": "1", "b": "2"})

    def test_garbage(self):
        for blob in (b"", b"x" * 10, b"y" * 100):
            with self.assertRaises(KMSError):
                crypto.peek(blob)


class ModelTest(unittest.TestCase):
    def validate(self, op, body):
        try:
            MODEL.validate(op, body)
        except KMSError as err:
            return err.error_type, err.message
        return None

    def test_constraints(self):
        kind, msg = self.validate("GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 2000})
        self.assertEqual(kind, "ValidationException")
        self.assertIn("Value '2000' at 'numberOfBytes'", msg)
        kind, msg = self.validate("Encrypt", {"Plaintext": "eA=="})
        self.assertIn("Value null at 'keyId'", msg)
        kind, msg = self.validate("GenerateDataKey", {"KeyId": "k", "KeySpec": "AES_512"})
        self.assertIn("enum value set", msg)
        self.assertEqual(self.validate("Encrypt", {"KeyId": "k", "Plaintext": "!!"})[0],
                         "SerializationException")
        self.assertEqual(self.validate("Encrypt", {"KeyId": 5, "Plaintext": "eA=="})[0],
                         "SerializationException")
        kind, msg = self.validate("Encrypt", {"KeyId": "k",
                                              "Plaintext": base64.b64encode(b"x" * 4097).decode()})
        self.assertIn("length less than or equal to 4096", msg)

    def test_decodes_blobs(self):
        out = MODEL.validate("Encrypt", {"KeyId": "k", "Plaintext": "eA==",
                                         "EncryptionContext": {"a": "b"}})
        self.assertEqual(out["Plaintext"], b"x")
        self.assertTrue(MODEL.has_operation("RotateKeyOnDemand"))


class SigV4Test(unittest.TestCase):
    def test_valid_and_invalid(self):
        body = b"{}"
        headers = sign(body)
        self.assertEqual(sigv4.verify("POST", "/", headers, body, PRINCIPALS,
                                      "us-east-1")[0], "AKIDTEST")
        with self.assertRaises(KMSError) as err:
            sigv4.verify("POST", "/", headers, b"{ }", PRINCIPALS, "us-east-1")
        self.assertEqual(err.exception.error_type, "InvalidSignatureException")
        with self.assertRaises(KMSError) as err:
            sigv4.verify("POST", "/", headers, body, PRINCIPALS, "eu-west-1")
        self.assertEqual(err.exception.error_type, "InvalidSignatureException")
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=16)
        with self.assertRaises(KMSError) as err:
            sigv4.verify("POST", "/", headers, body, PRINCIPALS, "us-east-1", now=later)
        self.assertIn("Signature expired", err.exception.message)

    def test_session_token(self):
        good = sign(b"{}", ("ASIATEST", "s", "tok"))
        sigv4.verify("POST", "/", good, b"{}", PRINCIPALS, "us-east-1")
        missing = sign(b"{}", ("ASIATEST", "s", None))
        with self.assertRaises(KMSError) as err:
            sigv4.verify("POST", "/", missing, b"{}", PRINCIPALS, "us-east-1")
        self.assertEqual(err.exception.error_type, "UnrecognizedClientException")


class PolicyTest(unittest.TestCase):
    HOST = "arn:aws:iam::111122223333:role/h"
    KEY = "arn:aws:kms:us-east-1:111122223333:key/" + KEY_ID

    def test_root_allows_account_and_deny_wins(self):
        doc = json.loads(policy.default_policy("111122223333"))
        self.assertEqual(policy.evaluate(doc, self.HOST, "kms:Decrypt", self.KEY, {}), "Allow")
        self.assertIsNone(policy.evaluate(doc, "arn:aws:iam::999999999999:user/x",
                                          "kms:Decrypt", self.KEY, {}))
        doc["Statement"].append({"Effect": "Deny", "Principal": {"AWS": [self.HOST]},
                                 "Action": "kms:Decrypt"})
        self.assertEqual(policy.evaluate(doc, self.HOST, "kms:Decrypt", self.KEY, {}), "Deny")

    def test_conditions_and_grants(self):
        doc = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*",
                              "Condition": {"StringEquals": {
                                  "kms:EncryptionContext:vol": "v1"}}}]}
        self.assertEqual(policy.evaluate(doc, self.HOST, "kms:Decrypt", self.KEY,
                                         {"vol": "v1"}), "Allow")
        self.assertIsNone(policy.evaluate(doc, self.HOST, "kms:Decrypt", self.KEY, {}))
        grant = {"GranteePrincipal": self.HOST, "Operations": ["Decrypt"],
                 "Constraints": {"EncryptionContextEquals": {"vol": "v1"}}}
        self.assertTrue(policy.grant_allows(grant, self.HOST, "Decrypt", {"vol": "v1"}))
        self.assertFalse(policy.grant_allows(grant, self.HOST, "Decrypt",
                                             {"vol": "v1", "x": "y"}))
        self.assertFalse(policy.grant_allows(grant, self.HOST, "Encrypt", {"vol": "v1"}))

    def test_grant_constraints_as_aws_documents_them(self):
        session = "arn:aws:sts::111122223333:assumed-role/h/i-0123"
        grant = {"GranteePrincipal": self.HOST,
                 "Operations": ["Decrypt", "DescribeKey", "RetireGrant", "CreateGrant"],
                 "Constraints": {"EncryptionContextEquals": {"Vol": "v1"}}}
        # a grant naming a role covers the role's sessions
        self.assertTrue(policy.grant_allows(grant, session, "Decrypt", {"Vol": "v1"}))
        self.assertFalse(policy.grant_allows(
            grant, "arn:aws:sts::111122223333:assumed-role/other/i-0123", "Decrypt",
            {"Vol": "v1"}))
        # keys compare without case, values with it
        self.assertTrue(policy.grant_allows(grant, self.HOST, "Decrypt", {"vol": "v1"}))
        self.assertFalse(policy.grant_allows(grant, self.HOST, "Decrypt", {"Vol": "V1"}))
        # the constraint does not bind operations without an encryption context
        self.assertTrue(policy.grant_allows(grant, self.HOST, "DescribeKey", None))
        self.assertTrue(policy.grant_allows(grant, self.HOST, "RetireGrant", None))
        # CreateGrant through it: an equally strict or stricter constraint only
        equal = {"EncryptionContextEquals": {"vol": "v1"}}
        for new, ok in ((equal, True), (None, False),
                        ({"EncryptionContextEquals": {"Vol": "v2"}}, False),
                        ({"EncryptionContextSubset": {"Vol": "v1"}}, False)):
            self.assertEqual(policy.grant_allows(grant, self.HOST, "CreateGrant", None, new),
                             ok, new)
        subset = dict(grant, Constraints={"EncryptionContextSubset": {"vol": "v1"}})
        for new, ok in (({"EncryptionContextSubset": {"vol": "v1", "x": "y"}}, True),
                        ({"EncryptionContextEquals": {"vol": "v1", "x": "y"}}, True),
                        ({"EncryptionContextSubset": {"x": "y"}}, False), (None, False)):
            self.assertEqual(policy.grant_allows(subset, self.HOST, "CreateGrant", None, new),
                             ok, new)

    def test_malformed(self):
        for text in ("nope", "{}", '{"Statement": [{"Effect": "Maybe"}]}'):
            with self.assertRaises(KMSError):
                policy.parse(text)


class STSTest(unittest.TestCase):
    CALLER = "arn:aws:iam::111122223333:user/t"

    def setUp(self):
        self.txn = Transaction({"principals": dict(PRINCIPALS), "roles": {},
                                "sts": sts.default_sts_config()})
        sts.create_role(self.txn, {"RoleName": "r1", "TrustedPrincipals": [self.CALLER]})
        sts.create_role(self.txn, {"RoleName": "web", "WebIdentity": True})

    def _creds(self, xml):
        return {tag: xml.split(f"<{tag}>")[1].split(f"</{tag}>")[0]
                for tag in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Arn")}

    def test_assume_role_trust_and_duration(self):
        arn = "arn:aws:iam::111122223333:role/r1"
        xml = sts.assume_role(self.txn, {"RoleArn": arn, "RoleSessionName": "s1"},
                              self.CALLER, "rid")
        creds = self._creds(xml)
        self.assertTrue(creds["AccessKeyId"].startswith("ASIA"))
        self.assertEqual(creds["Arn"], "arn:aws:sts::111122223333:assumed-role/r1/s1")
        principal = self.txn.data["principals"][creds["AccessKeyId"]]
        self.assertEqual(principal["session_token"], creds["SessionToken"])
        with self.assertRaises(sts.STSError) as e:
            sts.assume_role(self.txn, {"RoleArn": arn, "RoleSessionName": "s1"},
                            "arn:aws:iam::111122223333:user/other", "rid")
        self.assertEqual(e.exception.code, "AccessDenied")
        with self.assertRaises(sts.STSError) as e:
            sts.assume_role(self.txn, {"RoleArn": arn, "RoleSessionName": "s1",
                                       "DurationSeconds": "60"}, self.CALLER, "rid")
        self.assertEqual(e.exception.code, "ValidationError")

    def test_expired_session_rejected(self):
        self.txn.data["sts"]["min_duration"] = 1
        xml = sts.assume_role(self.txn, {"RoleArn": "arn:aws:iam::111122223333:role/r1",
                                         "RoleSessionName": "s2", "DurationSeconds": "1"},
                              self.CALLER, "rid")
        creds = self._creds(xml)
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
        with self.assertRaises(KMSError) as e:
            sigv4.verify("POST", "/", sign(b"{}", (creds["AccessKeyId"],
                                                   creds["SecretAccessKey"],
                                                   creds["SessionToken"])),
                         b"{}", self.txn.data["principals"], "us-east-1", now=later)
        self.assertEqual(e.exception.error_type, "ExpiredTokenException")

    def test_web_identity(self):
        with self.assertRaises(sts.STSError) as e:
            sts.assume_role_with_web_identity(self.txn, {
                "RoleArn": "arn:aws:iam::111122223333:role/web", "RoleSessionName": "w1",
                "WebIdentityToken": ""}, "rid")
        self.assertEqual(e.exception.code, "ValidationError")
        with self.assertRaises(sts.STSError) as e:
            sts.assume_role_with_web_identity(self.txn, {
                "RoleArn": "arn:aws:iam::111122223333:role/r1", "RoleSessionName": "w1",
                "WebIdentityToken": "a.b.c"}, "rid")
        self.assertEqual(e.exception.code, "AccessDenied")
        xml = sts.assume_role_with_web_identity(self.txn, {
            "RoleArn": "arn:aws:iam::111122223333:role/web", "RoleSessionName": "w1",
            "WebIdentityToken": "a.eyJzdWIiOiJob3N0In0.c"}, "rid")
        self.assertIn("<SubjectFromWebIdentityToken>host<", xml)

    def test_policy_matches_role_for_session(self):
        doc = {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                              "Principal": {"AWS": "arn:aws:iam::111122223333:role/r1"}}]}
        self.assertEqual(policy.evaluate(
            doc, "arn:aws:sts::111122223333:assumed-role/r1/s", "kms:Decrypt", "k", {}),
            "Allow")


class FaultTest(unittest.TestCase):
    def test_count(self):
        txn = Transaction({"faults": [faults.parse({"operation": "Decrypt",
                                                    "fault": "throttle", "count": 2})]})
        self.assertIsNone(faults.take(txn, "Encrypt"))
        self.assertEqual(faults.take(txn, "Decrypt")["fault"], "throttle")
        self.assertEqual(faults.take(txn, "Decrypt")["fault"], "throttle")
        self.assertIsNone(faults.take(txn, "Decrypt"))
        with self.assertRaises(KMSError):
            faults.parse({"fault": "explode"})

    def test_key_id(self):
        arn = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"
        txn = Transaction({"faults": [faults.parse({"operation": "Decrypt", "fault": "reset",
                                                    "count": -1, "key_id": arn})]})
        other = "0000abcd-12ab-34cd-56ef-1234567890ab"
        # The emulator's ciphertext header: "KMSE", version 1, the key's id.
        blob = base64.b64encode(b"KMSE\x01" + KEY_ID.encode() + bytes(60)).decode()
        for body, hit in ((json.dumps({"KeyId": KEY_ID}), True),
                          (json.dumps({"KeyId": arn}), True),
                          (json.dumps({"KeyId": other}), False),
                          (json.dumps({"KeyId": "alias/x"}), False),
                          (json.dumps({"CiphertextBlob": blob}), True),
                          (json.dumps({"CiphertextBlob": "!!"}), False),
                          ("not json", False), ("", False)):
            got = faults.take(txn, "Decrypt", body.encode())
            self.assertEqual(got is not None, hit, body)
        self.assertEqual(faults.take(txn, "Decrypt", b"{}"), None)
        for bad in ("alias/x", "", 5, "arn:aws:kms:us-east-1:111122223333:alias/x"):
            with self.assertRaises(KMSError):
                faults.parse({"fault": "reset", "key_id": bad})


class ServerTest(unittest.TestCase):
    """A live server in this process: two stores on one file, keep-alive."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        state = os.path.join(cls.tmp.name, "state.json")
        cls.server = Server(("127.0.0.1", 0), Handler)
        cls.server.app = Emulator(parse_args(["--listen", "127.0.0.1:0", "--state", state]))
        cls.server.verbose = False
        cls.server.tls_context = None
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.state = state

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.tmp.cleanup()

    def call(self, conn, op, body, creds=("AKIDCUSTOMER00000001", "customersecret", None)):
        data = json.dumps(body).encode()
        req = AWSRequest(method="POST", url=f"http://127.0.0.1:{self.port}/", data=data,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "TrentService." + op})
        SigV4Auth(Credentials(*creds), "kms", "us-east-1").add_auth(req)
        conn.request("POST", "/", body=data, headers=dict(req.headers.items()))
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    def test_keep_alive_and_shared_state(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        status, out = self.call(conn, "CreateKey", {})
        self.assertEqual(status, 200)
        key = out["KeyMetadata"]["KeyId"]
        sock = conn.sock
        status, out = self.call(conn, "Encrypt", {"KeyId": key, "Plaintext": "eA=="})
        self.assertEqual(status, 200)
        self.assertIs(conn.sock, sock, "connection was not reused")
        # Another Store on the same file (as another process would) sees the
        # key and can change it; the server sees that change.
        other = Store(self.state)
        with other.transaction() as txn:
            self.assertIn(key, txn.data["keys"])
            txn.data["keys"][key]["KeyState"] = "Disabled"
            txn.dirty = True
        status, out = self.call(conn, "Encrypt", {"KeyId": key, "Plaintext": "eA=="})
        self.assertEqual((status, out["__type"]), (409, "DisabledException"))
        conn.close()

    def test_fault_list_added_at_once(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

        def post(body):
            conn.request("POST", "/_emulator/faults", body=json.dumps(body))
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        conn.request("DELETE", "/_emulator/faults")
        conn.getresponse().read()
        status, out = post([{"operation": "Decrypt", "fault": "throttle", "count": 3},
                            {"operation": "Decrypt", "fault": "explode"}])
        self.assertEqual((status, out["__type"]), (400, "ValidationException"))
        status, out = post([{"operation": "Decrypt", "fault": "throttle", "count": 3},
                            {"operation": "Decrypt", "fault": "internal", "key_id": KEY_ID}])
        self.assertEqual(status, 200)
        self.assertEqual([f["fault"] for f in out["faults"]], ["throttle", "internal"])
        self.assertEqual(out["faults"][1]["key_id"], KEY_ID)
        conn.request("DELETE", "/_emulator/faults")
        conn.getresponse().read()
        conn.close()


class StandbyTest(unittest.TestCase):
    """--standby: loads, says so, and serves only after SIGUSR1."""

    def test_standby_binds_on_sigusr1(self):
        with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            proc = subprocess.Popen(
                [sys.executable, os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                              "kms-emulator"),
                 "--standby", "--listen", f"127.0.0.1:{port}",
                 "--state", os.path.join(tmp, "state.json")],
                stdout=subprocess.PIPE, text=True)
            try:
                self.assertEqual(proc.stdout.readline(), "kms-emulator: standing by\n")
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                proc.send_signal(signal.SIGUSR1)
                self.assertEqual(proc.stdout.readline(),
                                 f"kms-emulator: listening on http://127.0.0.1:{port}\n")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/_emulator/health")
                self.assertEqual(conn.getresponse().status, 200)
                conn.close()
            finally:
                proc.terminate()
                self.assertEqual(proc.wait(timeout=10), 0)
                proc.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=1)
