"""HTTP(S) front end: the KMS JSON API plus IMDSv2, container credentials
and the emulator-only control API, all on one port.
"""

import argparse
import datetime
import json
import os
import secrets
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import ACCOUNT_ID, DEFAULT_REGION, faults, sts
from .errors import KMSError
from .model import ServiceModel
from .ops import Call, Kms
from .store import Store

TARGET_PREFIX = "TrentService."
JSON_TYPES = ("application/x-amz-json-1.1", "application/x-amz-json-1.0")
CREDENTIAL_LIFETIME = datetime.timedelta(hours=6)


def _iso(ts=None, millis=False):
    moment = (datetime.datetime.now(datetime.timezone.utc) if ts is None else
              datetime.datetime.fromtimestamp(ts, datetime.timezone.utc))
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditLog:
    """One JSON object per line per KMS call, in the spirit of CloudTrail."""

    def __init__(self, path):
        self._fd = (os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    if path else None)

    def write(self, record):
        if self._fd is not None:
            line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
            os.write(self._fd, line.encode("utf-8"))  # O_APPEND: one atomic write


class Emulator:
    """Everything the request handlers share."""

    def __init__(self, args):
        self.region = args.region
        self.latency = (args.latency_ms or 0) / 1000.0
        self.store = Store(args.state)
        self.model = ServiceModel()
        self.kms = Kms(self.region)
        self.audit = AuditLog(args.audit_log)
        self.imds_tokens = {}
        self.imds_lock = threading.Lock()
        # Import the signer now: the first request should not pay for it.
        from . import sigv4
        self.sigv4 = sigv4

    def instance_credentials(self):
        with self.store.transaction() as txn:
            role = txn.data["instance_role"]
            principal = txn.data["principals"][role["access_key_id"]]
            token = txn.data.get("container_auth_token")
        now = datetime.datetime.now(datetime.timezone.utc)
        creds = {
            "Code": "Success",
            "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Type": "AWS-HMAC",
            "AccessKeyId": role["access_key_id"],
            "SecretAccessKey": principal["secret"],
            "Token": principal.get("session_token", ""),
            "Expiration": (now + CREDENTIAL_LIFETIME).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "RoleArn": principal["arn"],
        }
        return role["name"], creds, token


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kms-emulator"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are dropped after this

    # -- plumbing --------------------------------------------------------------

    def setup(self):
        context = self.server.tls_context
        if context is not None:
            self.request.settimeout(30)
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, fmt, *args):  # quiet: the audit log is the record
        if self.server.verbose:
            sys.stderr.write("kms-emulator: %s %s\n" % (self.address_string(), fmt % args))

    @property
    def app(self):
        return self.server.app

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, content_type="application/x-amz-json-1.1",
              headers=()):
        data = body if isinstance(body, bytes) else (
            json.dumps(body).encode() if not isinstance(body, str) else body.encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, obj):
        self._send(status, obj, "application/json")

    def _reset(self):
        """Abort the connection with a TCP RST and no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the file object's hold on the socket
        self.connection.close()
        self.close_connection = True

    # -- routing ---------------------------------------------------------------

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path == "/" and "X-Amz-Target" in self.headers:
            return self._kms()
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if path == "/" and content_type.lower() == "application/x-www-form-urlencoded":
            return self._sts()
        if path == "/_emulator/roles":
            return self._control(self._create_role)
        if path == "/_emulator/sts":
            return self._control(self._configure_sts)
        if path == "/_emulator/faults":
            return self._control(self._add_fault)
        if path == "/_emulator/expire-deletion":
            return self._control(self._expire_deletion)
        self._body()
        self._send(404, "Not Found\n", "text/plain")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/latest/"):
            return self._imds_get(path)
        if path == "/container/credentials":
            return self._container()
        if path == "/_emulator/health":
            return self._send_json(200, {"status": "ok", "region": self.app.region})
        if path == "/_emulator/faults":
            with self.app.store.transaction() as txn:
                return self._send_json(200, {"faults": txn.data["faults"]})
        if path == "/_emulator/roles":
            with self.app.store.transaction() as txn:
                return self._send_json(200, {"roles": txn.data.get("roles", {})})
        if path == "/_emulator/sessions":
            query = urllib.parse.parse_qs(self.path.partition("?")[2])
            name = (query.get("session_name") or [None])[0]
            with self.app.store.transaction() as txn:
                return self._send_json(200, sts.sessions(txn, name))
        self._send(404, "Not Found\n", "text/plain")

    def do_PUT(self):
        self._body()
        if self.path.split("?", 1)[0] == "/latest/api/token":
            return self._imds_token()
        self._send(404, "Not Found\n", "text/plain")

    def do_DELETE(self):
        self._body()
        if self.path.split("?", 1)[0] == "/_emulator/faults":
            with self.app.store.transaction() as txn:
                txn.data["faults"] = []
                txn.dirty = True
            return self._send_json(200, {"faults": []})
        self._send(404, "Not Found\n", "text/plain")

    # -- KMS -------------------------------------------------------------------

    def _kms(self):
        app = self.app
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        body = self._body()
        target = self.headers.get("X-Amz-Target", "")
        operation = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        record = {"time": _iso(millis=True), "request_id": request_id,
                  "operation": operation or target, "principal": None,
                  "access_key_id": None, "key_arn": None, "encryption_context": None,
                  "source_ip": self.client_address[0],
                  "user_agent": self.headers.get("User-Agent")}
        status, response = 200, None
        try:
            if app.latency:
                time.sleep(app.latency)
            fault = None
            if operation:
                with app.store.transaction() as txn:
                    fault = faults.take(txn, operation, body)
            if fault is not None:
                record["fault"] = fault["fault"]
                if self._apply_fault(fault, request_id, record, started):
                    return
            response = self._kms_call(operation, body, record)
            record["result"] = "Success"
        except KMSError as err:
            status, response = err.status, err.body()
            record["result"] = err.error_type
            record["error_message"] = err.message
        except Exception as err:  # a bug in the emulator: say so, like AWS would
            status = 500
            response = KMSError("KMSInternalException", f"emulator bug: {err!r}").body()
            record["result"] = "KMSInternalException"
            sys.stderr.write(f"kms-emulator: internal error: {err!r}\n")
        record["http_status"] = status
        self._send(status, response, headers=[("x-amzn-RequestId", request_id)])
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        app.audit.write(record)

    def _kms_call(self, operation, body, record):
        app = self.app
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if not operation or content_type.lower() not in JSON_TYPES:
            raise KMSError("UnknownOperationException", "")
        with app.store.transaction() as txn:
            access_key, principal = app.sigv4.verify(
                "POST", self.path, self.headers, body, txn.data["principals"],
                app.region)
        record["access_key_id"] = access_key
        record["principal"] = principal["arn"]
        if not (app.model.has_operation(operation) and app.kms.supports(operation)):
            raise KMSError("UnknownOperationException", "")
        try:
            raw = json.loads(body.decode("utf-8") or "{}")
        except ValueError:
            raise KMSError("SerializationException",
                           "Unable to parse the request body as JSON") from None
        params = app.model.validate(operation, raw)
        with app.store.transaction() as txn:
            call = Call(txn, principal["arn"])
            try:
                return app.kms.run(call, operation, params)
            finally:
                record["key_arn"] = call.key_arn
                record["encryption_context"] = call.encryption_context

    def _apply_fault(self, fault, request_id, record, started):
        """Act out an injected fault; True if the request is finished."""
        kind = fault["fault"]
        latency = fault.get("latency_ms")
        if kind == "latency":
            time.sleep(latency / 1000.0)
            return False
        record["result"] = "fault:" + kind
        if kind in faults.AWS_ERRORS:
            error = KMSError(*faults.AWS_ERRORS[kind])
            self._body_done_send(error.status, error.body(), request_id, record)
        elif kind in ("http500", "http503"):
            status = 500 if kind == "http500" else 503
            text = ("Internal Server Error\n" if status == 500
                    else "Service Unavailable\n")
            self._body_done_send(status, text, request_id, record, "text/plain")
        elif kind == "malformed":
            self._body_done_send(200, "<html>this is not JSON", request_id, record)
        elif kind == "reset":
            self._reset()
        elif kind == "timeout":
            time.sleep((latency if latency is not None else 30000) / 1000.0)
            self.close_connection = True
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        self.app.audit.write(record)
        return True

    def _body_done_send(self, status, body, request_id, record, content_type=None):
        record["http_status"] = status
        self._send(status, body, content_type or "application/x-amz-json-1.1",
                   headers=[("x-amzn-RequestId", request_id)])

    # -- STS (Query API) -------------------------------------------------------

    def _sts(self):
        app = self.app
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        body = self._body()
        params = {k: v[0] for k, v in urllib.parse.parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        action = params.get("Action", "")
        record = {"time": _iso(millis=True), "request_id": request_id,
                  "operation": "sts:" + action, "principal": None, "access_key_id": None,
                  "key_arn": None, "encryption_context": None,
                  "source_ip": self.client_address[0],
                  "user_agent": self.headers.get("User-Agent")}
        status = 200
        try:
            if params.get("Version") != sts.VERSION:
                raise sts.STSError("InvalidAction", "Version must be 2011-06-15")
            if action == "AssumeRoleWithWebIdentity":
                # Unsigned by design: the token is the credential.
                with app.store.transaction() as txn:
                    response = sts.assume_role_with_web_identity(txn, params, request_id)
                    record["role_arn"] = params.get("RoleArn")
            elif action in ("AssumeRole", "GetCallerIdentity"):
                with app.store.transaction() as txn:
                    try:
                        access_key, principal = app.sigv4.verify(
                            "POST", self.path, self.headers, body,
                            txn.data["principals"], app.region, service="sts")
                    except KMSError as err:
                        raise sts.STSError(sts.FROM_KMS.get(err.error_type,
                                                            err.error_type),
                                           err.message) from None
                    record["access_key_id"] = access_key
                    record["principal"] = principal["arn"]
                    if action == "AssumeRole":
                        record["role_arn"] = params.get("RoleArn")
                        response = sts.assume_role(txn, params, principal["arn"],
                                                   request_id)
                    else:
                        response = sts.get_caller_identity(principal, access_key,
                                                           request_id)
            else:
                raise sts.STSError("InvalidAction",
                                   f"Could not find operation {action} for version "
                                   f"{sts.VERSION}")
            record["result"] = "Success"
        except sts.STSError as err:
            status, response = err.status, err.body(request_id)
            record["result"] = err.code
            record["error_message"] = err.message
        record["http_status"] = status
        self._send(status, response, "text/xml",
                   headers=[("x-amzn-RequestId", request_id)])
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        app.audit.write(record)

    # -- EC2 instance metadata (IMDSv2) ----------------------------------------

    def _imds_token(self):
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self._send(400, "Bad Request\n", "text/plain")
        token = secrets.token_urlsafe(32)
        with self.app.imds_lock:
            now = time.monotonic()
            self.app.imds_tokens = {t: e for t, e in self.app.imds_tokens.items()
                                    if e > now}
            self.app.imds_tokens[token] = now + int(ttl)
        self._send(200, token, "text/plain",
                   headers=[("X-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def _imds_get(self, path):
        token = self.headers.get("X-aws-ec2-metadata-token", "")
        with self.app.imds_lock:
            expiry = self.app.imds_tokens.get(token)
        if expiry is None or expiry < time.monotonic():
            return self._send(401, "Unauthorized\n", "text/plain")
        role, creds, _ = self.app.instance_credentials()
        base = "/latest/meta-data/iam/security-credentials/"
        if path in (base, base.rstrip("/")):
            return self._send(200, role, "text/plain")
        if path.rstrip("/") == base + role:
            creds = {k: v for k, v in creds.items() if k != "RoleArn"}
            return self._send(200, json.dumps(creds, indent=2), "text/plain")
        if path == "/latest/meta-data/placement/region":
            return self._send(200, self.app.region, "text/plain")
        if path == "/latest/meta-data/placement/availability-zone":
            return self._send(200, self.app.region + "a", "text/plain")
        if path == "/latest/dynamic/instance-identity/document":
            return self._send_json(200, {
                "accountId": ACCOUNT_ID, "region": self.app.region,
                "availabilityZone": self.app.region + "a",
                "instanceId": "i-0123456789abcdef0", "architecture": "x86_64"})
        self._send(404, "Not Found\n", "text/plain")

    # -- ECS container credentials ---------------------------------------------

    def _container(self):
        _, creds, required = self.app.instance_credentials()
        if required and self.headers.get("Authorization") != required:
            return self._send(401, "Unauthorized\n", "text/plain")
        creds = {k: creds[k] for k in ("AccessKeyId", "SecretAccessKey", "Token",
                                       "Expiration", "RoleArn")}
        self._send_json(200, creds)

    # -- emulator control (tests only) -----------------------------------------

    def _control(self, action):
        try:
            try:
                spec = json.loads(self._body().decode("utf-8") or "{}")
            except ValueError:
                raise KMSError("SerializationException", "body is not JSON") from None
            status, result = 200, action(spec)
        except KMSError as err:
            status, result = err.status, err.body()
        except sts.STSError as err:
            status, result = err.status, {"__type": err.code, "message": err.message}
        self._send_json(status, result)

    def _create_role(self, spec):
        with self.app.store.transaction() as txn:
            return sts.create_role(txn, spec)

    def _configure_sts(self, spec):
        if not isinstance(spec, dict):
            raise KMSError("ValidationException", "body must be an object")
        with self.app.store.transaction() as txn:
            return sts.configure(txn, spec)

    def _add_fault(self, spec):
        # A list is appended at once: no request sees only part of it.
        specs = spec if isinstance(spec, list) else [spec]
        added = [faults.parse(one) for one in specs]
        with self.app.store.transaction() as txn:
            txn.data["faults"].extend(added)
            txn.dirty = True
            return {"faults": txn.data["faults"]}

    def _expire_deletion(self, spec):
        key_ref = spec.get("KeyId") if isinstance(spec, dict) else None
        if not isinstance(key_ref, str) or not key_ref:
            raise KMSError("ValidationException", "KeyId is required")
        kms = self.app.kms
        with self.app.store.transaction() as txn:
            call = Call(txn, None)
            key = kms.resolve(call, key_ref)
            if key["KeyState"] != "PendingDeletion":
                raise KMSError("KMSInvalidStateException",
                               f"{kms.key_arn(key['KeyId'])} is not pending deletion.")
            kms.delete_key(call, key["KeyId"])
        return {"KeyId": kms.key_arn(key["KeyId"]), "Deleted": True}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Clients that vanish, TLS handshakes that fail: not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="kms-emulator", description="AWS KMS emulator for dmbyok's tests.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to bind; port 0 picks a free port")
    parser.add_argument("--state", required=True, metavar="FILE",
                        help="JSON state file (created with defaults if absent)")
    parser.add_argument("--tls-cert", metavar="PEM")
    parser.add_argument("--tls-key", metavar="PEM")
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="added delay before every KMS request")
    parser.add_argument("--audit-log", metavar="FILE",
                        help="append one JSON line per KMS call")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--verbose", action="store_true",
                        help="log each HTTP request to stderr")
    parser.add_argument("--standby", action="store_true",
                        help="load, print 'kms-emulator: standing by', and bind --listen "
                        "only on SIGUSR1 (a warm stand-by to take over a stopped "
                        "emulator's address at once)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        parser.error("--listen wants HOST:PORT")
    args.host, args.port = host.strip("[]"), int(port)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.standby:
        # Held pending until sigwait(): an early SIGUSR1 must not kill us.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    app = Emulator(args)
    if args.standby:
        # Starting costs seconds under emulation; a test that stops the KMS and wants it
        # back at a known moment starts a stand-by early and wakes it then.
        sys.stdout.write("kms-emulator: standing by\n")
        sys.stdout.flush()
        signal.sigwait({signal.SIGUSR1})
    server = Server((args.host, args.port), Handler)
    server.app = app
    server.verbose = args.verbose
    server.tls_context = None
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.tls_context = context
        scheme = "https"

    host, port = server.server_address[:2]
    if ":" in host:
        host = f"[{host}]"
    sys.stdout.write(f"kms-emulator: listening on {scheme}://{host}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
