"""HTTP(S) front end on one port: Cloud KMS v1 REST (/v1/...), the OAuth 2.0 token
endpoint (/token), the GCE metadata server (/computeMetadata/v1/...) and the test-only
control API (/_emulator/...).
"""

import argparse
import datetime
import json
import os
import signal
import socket
import ssl
import struct
import sys
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import faults, oauth
from .errors import GoogleError, invalid
from .kms import Kms, route
from .store import Store

JSON = "application/json; charset=UTF-8"


def _now_iso():
    moment = datetime.datetime.now(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class AuditLog:
    """One JSON object per line per request (KMS, token endpoint, metadata token)."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def write(self, record):
        if self._fd is not None:
            line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
            os.write(self._fd, line.encode("utf-8"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""
    timeout = 300

    def setup(self):
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.server.tls_context
        if context is not None:
            self.request.settimeout(30)
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("gcp-kms-emulator: %s %s\n" % (self.address_string(), fmt % args))

    @property
    def app(self):
        return self.server.app

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body, content_type=JSON, headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, indent=2) + "\n"
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self):
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()
        self.close_connection = True

    def _base_url(self):
        scheme = "https" if self.server.tls_context else "http"
        return f"{scheme}://{self.headers.get('Host') or self.server.host_port}"

    # -- routing -------------------------------------------------------------------

    def _dispatch(self, method):
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        if path.startswith("/v1/"):
            return self._kms(method, path[4:], query)
        if path in ("/token", "/oauth2/v4/token") and method == "POST":
            return self._token()
        if path == "/" or path.startswith("/computeMetadata/"):
            return self._metadata(method, path)
        if path.startswith("/_emulator/"):
            return self._control(method, path[len("/_emulator/"):], query)
        self._body()
        self._send(404, GoogleError("NOT_FOUND", "Requested entity was not found.").body())

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- faults --------------------------------------------------------------------

    def _fault(self, operation, resource, record, started):
        """Act out an injected fault; True when the request is finished."""
        with self.app.store.transaction() as txn:
            fault = faults.take(txn, operation, resource)
        if fault is None:
            return False
        record["fault"] = kind = fault["fault"]
        latency = fault.get("latency_ms")
        if kind == "latency":
            time.sleep(latency / 1000.0)
            return False
        record["result"] = "fault:" + kind
        answer = None  # (status, body, content type); None: no answer at all
        if kind in faults.GOOGLE_ERRORS:
            err = GoogleError(*faults.GOOGLE_ERRORS[kind])
            answer = (err.http_status, err.body(), JSON)
        elif kind in ("http500", "http503"):
            status = 500 if kind == "http500" else 503
            answer = (status, f"<html><body>Error {status}</body></html>\n", "text/html")
        elif kind == "malformed":
            answer = (200, "<html>this is not JSON", JSON)
        elif kind == "timeout":
            time.sleep((latency if latency is not None else 30000) / 1000.0)
            self.close_connection = True
        if answer:
            record["http_status"] = answer[0]
        # Logged before the answer: a client that reads the log once answered sees its call.
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        self.app.audit.write(record)
        if answer:
            self._send(*answer)
        elif kind == "reset":
            self._reset()
        return True

    def _record(self, operation, method, path):
        return {"time": _now_iso(), "request_id": str(uuid.uuid4()), "operation": operation,
                "method": method, "path": path, "principal": None, "resource": None,
                "source_ip": self.client_address[0],
                "user_agent": self.headers.get("User-Agent")}

    # -- Cloud KMS -----------------------------------------------------------------

    def _kms(self, method, path, query):
        app = self.app
        started = time.monotonic()
        body_bytes = self._body()
        found = route(method, path)
        operation, resource, handler = found if found else ("Unknown", None, None)
        record = self._record(operation, method, "/v1/" + path)
        record["resource"] = resource
        if app.latency:
            time.sleep(app.latency)
        if found and self._fault(operation, resource, record, started):
            return
        status = 200
        try:
            if not found:
                raise GoogleError("NOT_FOUND", "Requested entity was not found.")
            try:
                body = json.loads(body_bytes.decode("utf-8") or "{}")
            except ValueError:
                raise invalid("Invalid JSON payload received.") from None
            if not isinstance(body, dict):
                raise invalid("Invalid JSON payload received. Expected an object.")
            with app.store.transaction() as txn:
                principal = oauth.authenticate(txn.data,
                                               self.headers.get("Authorization"))
                record["principal"] = principal
                kms = Kms(txn.data, principal)
                try:
                    response = handler(kms, resource, query, body)
                finally:
                    txn.dirty = txn.dirty or kms.dirty
                    if kms.aad is not None:
                        record["additional_authenticated_data"] = kms.aad.decode(
                            "utf-8", "backslashreplace")
            record["result"] = "OK"
        except GoogleError as err:
            status, response = err.http_status, err.body()
            record["result"] = err.status
            record["error_message"] = err.message
        except Exception as err:  # an emulator bug: say so, as Google would
            status = 500
            response = GoogleError("INTERNAL", f"emulator bug: {err!r}").body()
            record["result"] = "INTERNAL"
            sys.stderr.write(f"gcp-kms-emulator: internal error: {err!r}\n")
        record["http_status"] = status
        headers = []
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"'))
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        app.audit.write(record)  # before the answer, as in _fault
        self._send(status, response, headers=headers)

    # -- OAuth 2.0 token endpoint ----------------------------------------------------

    def _token(self):
        started = time.monotonic()
        body = self._body()
        record = self._record("Token", "POST", "/token")
        if self._fault("Token", None, record, started):
            return
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(
            body.decode("utf-8", "replace")).items()}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        status = 200
        try:
            if ctype != "application/x-www-form-urlencoded":
                raise oauth.OAuthError("invalid_request", "Invalid Content-Type.")
            with self.app.store.transaction() as txn:
                response = oauth.jwt_bearer_grant(txn.data, form, self._base_url() + "/token")
                txn.dirty = True
                record["principal"] = txn.data["tokens"][response["access_token"]]["principal"]
            record["result"] = "OK"
        except oauth.OAuthError as err:
            status, response = err.status, err.body()
            record["result"] = err.code
            record["error_message"] = err.description
        record["http_status"] = status
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        self.app.audit.write(record)  # before the answer, as in _fault
        self._send(status, response, headers=[("Cache-Control", "no-cache, no-store")])

    # -- GCE metadata server -----------------------------------------------------------

    def _metadata(self, method, path):
        self._body()
        flavor = [("Metadata-Flavor", "Google")]
        if method != "GET":
            return self._send(405, "Method Not Allowed\n", "text/html", flavor)
        if path == "/":
            return self._send(200, "computeMetadata/\n", "application/text", flavor)
        if self.headers.get("X-Forwarded-For"):
            return self._send(403, "Forbidden\n", "text/html", flavor)
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._send(403, "Missing Metadata-Flavor:Google header.\n", "text/html",
                              flavor)
        with self.app.store.transaction() as txn:
            md = dict(txn.data["metadata"])
        email = md["service_account"]
        base = "/computeMetadata/v1/instance/service-accounts/"
        if path in (base + "default/token", base + email + "/token"):
            started = time.monotonic()
            record = self._record("Metadata", "GET", path)
            if self._fault("Metadata", None, record, started):
                return
            with self.app.store.transaction() as txn:
                response = oauth.issue(txn.data, "serviceAccount:" + email, "metadata")
                txn.dirty = True
            record.update(principal="serviceAccount:" + email, result="OK", http_status=200,
                          latency_ms=round((time.monotonic() - started) * 1000, 3))
            self.app.audit.write(record)
            return self._send(200, json.dumps(response), "application/json", flavor)
        if path in (base + "default/email", base + email + "/email"):
            return self._send(200, email, "application/text", flavor)
        if path == base:
            return self._send(200, "default/\n" + email + "/\n", "application/text", flavor)
        if path == "/computeMetadata/v1/project/project-id":
            return self._send(200, md["project_id"], "application/text", flavor)
        if path in (base + "default/", base + email + "/") and self.path.endswith(
                "recursive=true"):
            return self._send(200, json.dumps({
                "aliases": ["default"], "email": email,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}),
                "application/json", flavor)
        if path == "/computeMetadata/v1/project/numeric-project-id":
            return self._send(200, "123456789012", "application/text", flavor)
        if path == "/computeMetadata/v1/universe/universe-domain":
            return self._send(200, "googleapis.com", "application/text", flavor)
        if path in (base + "default/scopes", base + email + "/scopes"):
            return self._send(200, "https://www.googleapis.com/auth/cloud-platform\n",
                              "application/text", flavor)
        if path == "/computeMetadata/v1/instance/zone":
            return self._send(200, md["zone"], "application/text", flavor)
        self._send(404, "Not Found\n", "text/html", flavor)

    # -- control API (tests only) -------------------------------------------------------

    def _control(self, method, what, query):
        raw = self._body()
        try:
            try:
                spec = json.loads(raw.decode("utf-8") or "{}")
            except ValueError:
                raise invalid("body is not JSON") from None
            status, result = 200, self._control_do(method, what, spec)
        except GoogleError as err:
            status, result = err.http_status, err.body()
        self._send(status, result)

    def _control_do(self, method, what, spec):
        store = self.app.store
        if what == "health" and method == "GET":
            return {"status": "ok"}
        with store.transaction() as txn:
            data = txn.data
            if what == "faults":
                if method == "GET":
                    return {"faults": data["faults"]}
                if method == "DELETE":
                    data["faults"] = []
                elif method == "POST":
                    specs = spec if isinstance(spec, list) else [spec]
                    data["faults"].extend([faults.parse(s) for s in specs])
                txn.dirty = True
                return {"faults": data["faults"]}
            if what == "service-account-keys" and method == "POST":
                txn.dirty = True
                return oauth.create_key(data, spec.get("email"), self._base_url() + "/token")
            if what == "service-account-keys" and method == "DELETE":
                account = data["service_accounts"].get(spec.get("email"))
                if account is None:
                    raise GoogleError("NOT_FOUND", "no such service account")
                account["keys"].pop(spec.get("private_key_id"), None)
                txn.dirty = True
                return {}
            if what == "service-accounts" and method == "POST":
                email = spec.get("email")
                if not isinstance(email, str) or "@" not in email:
                    raise invalid("email is required")
                data["service_accounts"].setdefault(email, {"keys": {}})
                txn.dirty = True
                return {"email": email}
            if what == "destroy-now" and method == "POST":
                kms = Kms(data, None)
                out = kms.destroy_due(spec.get("name", ""))
                txn.dirty = True
                return out
            if what == "deny":
                if method == "DELETE":
                    data["deny"] = []
                elif method == "POST":
                    if not isinstance(spec.get("principal"), str):
                        raise invalid("principal is required")
                    data["deny"].append({"principal": spec["principal"],
                                         "permissions": spec.get("permissions") or ["*"],
                                         "resource": spec.get("resource")})
                txn.dirty = True
                return {"deny": data["deny"]}
            if what == "tokens" and method == "POST":
                # {"lifetime": s} for tokens issued from now on; {"expire": principal|"*"}
                # ends the issued tokens of a principal now.
                if "lifetime" in spec:
                    if not isinstance(spec["lifetime"], int) or spec["lifetime"] < 1:
                        raise invalid("lifetime must be a positive integer")
                    data["token_lifetime"] = spec["lifetime"]
                if "expire" in spec:
                    for entry in data["tokens"].values():
                        if entry.get("issued_by") and spec["expire"] in ("*",
                                                                          entry["principal"]):
                            entry["expires"] = time.time() - 1
                if "token" in spec and "principal" in spec:
                    data["tokens"][spec["token"]] = {"principal": spec["principal"],
                                                     "expires": spec.get("expires")}
                txn.dirty = True
                return {"token_lifetime": data["token_lifetime"]}
            if what == "metadata" and method == "POST":
                data["metadata"].update({k: v for k, v in spec.items()
                                         if k in ("service_account", "project_id", "zone")})
                data["service_accounts"].setdefault(data["metadata"]["service_account"],
                                                    {"keys": {}})
                txn.dirty = True
                return data["metadata"]
            if what == "project-policy":
                if method == "POST":
                    if not isinstance(spec.get("bindings"), list):
                        raise invalid("bindings is required")
                    data["project_policy"] = {"bindings": spec["bindings"]}
                    txn.dirty = True
                return data["project_policy"]
        raise GoogleError("NOT_FOUND", f"no control endpoint {method} /_emulator/{what}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)


class App:
    def __init__(self, args):
        self.latency = (args.latency_ms or 0) / 1000.0
        self.store = Store(args.state)
        self.audit = AuditLog(args.audit_log)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="gcp-kms-emulator",
                                     description="Google Cloud KMS emulator for dmbyok's tests.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--state", required=True, metavar="FILE")
    parser.add_argument("--tls-cert", metavar="PEM")
    parser.add_argument("--tls-key", metavar="PEM")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--audit-log", metavar="FILE")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--standby", action="store_true",
                        help="load, print 'gcp-kms-emulator: standing by', bind only on "
                        "SIGUSR1")
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
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    app = App(args)
    if args.standby:
        sys.stdout.write("gcp-kms-emulator: standing by\n")
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
    server.host_port = f"{host}:{port}"
    sys.stdout.write(f"gcp-kms-emulator: listening on {scheme}://{host}:{port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
