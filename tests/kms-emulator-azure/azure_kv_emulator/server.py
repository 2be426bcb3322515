"""One port for everything, plain HTTP or TLS (told apart by the first byte):

* Key Vault's REST API (/keys/..., /deletedkeys/...) for the vault named by the Host header;
* Microsoft Entra ID (/{tenant}/oauth2/v2.0/token, OpenID metadata, instance discovery);
* IMDS (/metadata/identity/oauth2/token, plain http as on a VM);
* an HTTP CONNECT proxy: a client with HTTPS_PROXY=http://HOST:PORT reaches
  https://VAULT.vault.azure.net and https://login.microsoftonline.com here, TLS terminated
  with the test CA's certificate for those names, so real-looking key ids work unchanged;
* the test-only control API (/_emulator/...).
"""

import argparse
import datetime
import json
import os
import signal
import socket
import socketserver
import ssl
import struct
import sys
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import (ADMIN_APP, HOST_APP, MI_SYSTEM_OID, MI_USER_OID, OTHER_APP, WORKLOAD_APP,
               KvError, identity)
from .keys import Vault
from .state import State, vault

FAULTS = {
    "latency": None,
    "throttle": (429, "Throttled", "Request was not allowed because the request rate is too "
                 "high. Please retry after the time indicated in Retry-After."),
    "http500": (500, "InternalServerError", "An unexpected error occurred."),
    "http503": (503, "ServiceUnavailable", "The service is temporarily unavailable."),
    "http504": (504, "GatewayTimeout", "The operation timed out."),
    "unauthorized": (401, "Unauthorized", "[TokenExpired] Error validating token: "
                     "'S2S12086'."),
    "malformed": None, "reset": None, "hang": None,
}
CRYPTO = {"wrapkey": "WrapKey", "unwrapkey": "UnwrapKey", "encrypt": "Encrypt",
          "decrypt": "Decrypt"}


def principal_oid(data, who):
    names = {"admin": ADMIN_APP, "host": HOST_APP, "other": OTHER_APP,
             "workload": WORKLOAD_APP}
    if who in names:
        return data["apps"][names[who]]["object_id"]
    return {"mi-system": MI_SYSTEM_OID, "mi-user": MI_USER_OID}.get(who, who)


def split_key_id(key_id):
    """https://HOST/keys/NAME[/VERSION] -> (host, name, version or "")."""
    parsed = urllib.parse.urlsplit(key_id)
    parts = parsed.path.strip("/").split("/")
    if parsed.scheme != "https" or len(parts) not in (2, 3) or parts[0] != "keys":
        raise KvError(400, "BadParameter", f"not a key identifier: {key_id}")
    return parsed.netloc, parts[1], parts[2] if len(parts) == 3 else ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = 300
    tunnel = None
    tls = False

    def setup(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.settimeout(60)
        ctx = self.server.tls_context
        if ctx is not None:
            try:
                first = self.request.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            if first == b"\x16":
                self.request = ctx.wrap_socket(self.request, server_side=True)
                self.tls = True
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            if self.tls:
                try:
                    self.connection.close()
                except OSError:
                    pass

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("azure-kv-emulator: %s %s\n" % (self.address_string(), fmt % args))

    @property
    def app(self):
        return self.server.app

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body, headers=(), content_type="application/json; charset=utf-8"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = b"" if body is None else (body.encode() if isinstance(body, str) else body)
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        # The request's id, as its audit record says it (one per request).
        self.send_header("x-ms-request-id", getattr(self, "request_id", None) or
                         str(uuid.uuid4()))
        self.send_header("x-ms-keyvault-region", "westeurope")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _host(self):
        host = (self.tunnel or self.headers.get("Host") or self.server.host_port).lower()
        return host[:-4] if host.endswith(":443") else host

    def _base(self):
        return ("https://" if self.tls else "http://") + (self.headers.get("Host") or
                                                          self.server.host_port)

    # -- the proxy -----------------------------------------------------------------

    def do_CONNECT(self):
        self.request_id = str(uuid.uuid4())
        ctx = self.server.tls_context
        host = self.path.rsplit(":", 1)[0].lower()
        if ctx is None or self.tls:
            return self._send(502, "no TLS here\n", content_type="text/plain")
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = ctx.wrap_socket(self.connection, server_side=True)
        except (OSError, ssl.SSLError):
            self.close_connection = True
            return
        self.connection = self.request = tls
        self.rfile = tls.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(tls)
        self.tls, self.tunnel = True, host
        self.close_connection = False

    # -- routing -------------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method):
        # One id per request (a kept-alive connection serves several): the answer's
        # x-ms-request-id and the audit record's request_id.
        self.request_id = str(uuid.uuid4())
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = path.strip("/").split("/") if path.strip("/") else []
        if self._host() == "management.azure.com":
            return self._arm(path)
        if path.rstrip("/").endswith("/keys") or (parts and parts[0] in ("keys",
                                                                           "deletedkeys")):
            return self._vault(method, path, parts, query)
        if path == "/metadata/identity/oauth2/token":
            return self._imds(query)
        if path.startswith("/_emulator/"):
            return self._control(method, path[len("/_emulator/"):])
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
            return self._token(parts[0])
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            self._body()
            return self._send(200, identity.openid_configuration(self._base(), parts[0]))
        if path == "/common/discovery/instance":
            self._body()
            return self._send(200, identity.instance_discovery(
                self._base(), urllib.parse.urlsplit(self._base()).netloc))
        self._body()
        self._send(404, {"error": {"code": "NotFound", "message": f"no route {path}"}})

    # -- audit and faults ----------------------------------------------------------------

    def _record(self, operation, method):
        return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="milliseconds"),
                "request_id": self.request_id, "operation": operation, "method": method,
                "host": self._host(), "path": self.path, "principal": None, "key": None,
                "tls": self.tls, "via_proxy": self.tunnel is not None,
                "user_agent": self.headers.get("User-Agent"), "source_ip":
                self.client_address[0]}

    def _audit(self, record, started):
        """Logs the call. Called before the answer is sent, so that a client that reads the
        log once answered always finds its call there."""
        record["latency_ms"] = round((time.monotonic() - started) * 1000, 3)
        self.app.audit(record)

    def _fault(self, operation, record, started, challenge_host=None):
        """Acts out an injected fault; True when the request is answered."""
        with self.app.state.txn() as t:
            fault = None
            for i, f in enumerate(t.data["faults"]):
                if f["operation"] == operation or (f["operation"] == "*" and
                                                   operation not in ("Token", "IMDS")):
                    fault = dict(f)
                    if f["count"] > 0:
                        f["count"] -= 1
                        if f["count"] == 0:
                            del t.data["faults"][i]
                        t.changed = True
                    break
            data = t.data
        if fault is None:
            return False
        kind = record["fault"] = fault["fault"]
        latency = fault.get("latency_ms")
        if kind == "latency":
            time.sleep(latency / 1000.0)
            return False
        record["result"] = "fault:" + kind
        answer = None  # (status, body, headers); None: no answer at all
        if FAULTS.get(kind):
            status, code, message = FAULTS[kind]
            headers = [("Retry-After", "1")] if status == 429 else []
            if status == 401 and challenge_host:
                headers.append(identity.challenge(data, challenge_host))
            answer = (status, {"error": {"code": code, "message": message}}, headers)
        elif kind == "malformed":
            answer = (200, "<html>not JSON", [])
        elif kind == "hang":
            time.sleep((latency if latency is not None else 30000) / 1000.0)
            self.close_connection = True
        if answer:
            record["http_status"] = answer[0]
        self._audit(record, started)  # before the answer: see _audit
        if answer:
            self._send(*answer)
        elif kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass
        return True

    # -- Key Vault ----------------------------------------------------------------------

    def _route(self, method, parts, body):
        """(operation, call(vault) -> (status, answer), key name or None)."""
        n = len(parts)
        if parts[0] == "keys":
            if n == 1 and method == "GET":
                return "GetKeys", lambda v: v.list(), None
            name = parts[1] if n > 1 else ""
            rest = [p for p in parts[2:]]
            if rest == ["create"] and method == "POST":
                return "CreateKey", lambda v: v.create(name, body), name
            if rest == ["rotate"] and method == "POST":
                return "RotateKey", lambda v: v.rotate(name), name
            if rest == ["versions"] and method == "GET":
                return "GetKeyVersions", lambda v: v.versions(name), name
            if len(rest) <= 1 and method == "GET":
                ver = rest[0] if rest else ""
                return "GetKey", lambda v: v.get(name, ver), name
            if len(rest) <= 1 and method == "PATCH":
                ver = rest[0] if rest else ""
                return "UpdateKey", lambda v: v.update(name, ver, body), name
            if not rest and method == "DELETE":
                return "DeleteKey", lambda v: v.delete(name), name
            if method == "POST" and rest and rest[-1] in CRYPTO and len(rest) <= 2:
                ver = rest[0] if len(rest) == 2 else ""
                op = rest[-1]
                return CRYPTO[op], lambda v: v.crypto(name, ver, op, body), name
        else:
            name = parts[1] if n > 1 else ""
            if n == 2 and method == "GET":
                return "GetDeletedKey", lambda v: v.deleted(name), name
            if n == 2 and method == "DELETE":
                return "PurgeDeletedKey", lambda v: v.purge(name), name
            if n == 3 and parts[2] == "recover" and method == "POST":
                return "RecoverDeletedKey", lambda v: v.recover(name), name
        return None

    def _vault(self, method, path, parts, query):
        started = time.monotonic()
        raw = self._body()
        host = self._host()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        found = self._route(method, parts, body if isinstance(body, dict) else {})
        operation = found[0] if found else "Unknown"
        record = self._record(operation, method)
        record["key"] = found[2] if found else None
        if self.app.latency:
            time.sleep(self.app.latency)
        if found and self._fault(operation, record, started, host):
            return
        status, headers = 200, []
        try:
            if not query.get("api-version"):
                raise KvError(400, "BadParameter", "The api-version query parameter "
                              "(?api-version=) is required for all requests.")
            with self.app.state.txn() as t:
                caller = identity.authenticate(t.data, self.headers.get("Authorization"),
                                               host)
                record["principal"] = caller["oid"]
                record["appid"] = caller.get("appid")
                if found is None:
                    raise KvError(404, "NotFound", f"no route {method} {path}")
                if not isinstance(body, dict):
                    raise KvError(400, "BadParameter", "The request body is not JSON.")
                answer = found[1](Vault(t, host, caller))
            if answer is None:
                status = 204
            record["result"] = "OK"
        except KvError as err:
            status, answer, headers = err.status, err.body(), err.headers
            record["result"] = err.code + (f"/{err.inner}" if err.inner else "")
            record["error_message"] = err.message
        except Exception as err:  # an emulator bug: say so as Key Vault would
            status = 500
            answer = {"error": {"code": "InternalServerError", "message": f"emulator bug: "
                                f"{err!r}"}}
            record["result"] = "InternalServerError"
            sys.stderr.write(f"azure-kv-emulator: internal error: {err!r}\n")
        record["http_status"] = status
        self._audit(record, started)  # before the answer: see _audit
        self._send(status, answer, headers)

    # -- Azure Resource Manager: only what `az login --allow-no-subscriptions` reads ------

    def _arm(self, path):
        self._body()
        with self.app.state.txn() as t:
            tenant = t.data["tenant"]
        if path == "/subscriptions":
            return self._send(200, {"value": []})
        if path == "/tenants":
            return self._send(200, {"value": [{
                "id": f"/tenants/{tenant}", "tenantId": tenant, "tenantCategory": "Home",
                "displayName": "dmbyok-test", "defaultDomain": "dmbyok-test.onmicrosoft.com",
                "domains": ["dmbyok-test.onmicrosoft.com"], "tenantType": "AAD"}]})
        self._send(404, {"error": {"code": "NotSupported",
                                   "message": "the emulator serves no other ARM route"}})

    # -- identity ---------------------------------------------------------------------

    def _token(self, tenant):
        started = time.monotonic()
        raw = self._body()
        record = self._record("Token", "POST")
        if self._fault("Token", record, started):
            return
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace"),
                                                           keep_blank_values=True).items()}
        record["appid"] = form.get("client_id")
        record["scope"] = form.get("scope")
        token_url = f"{self._base()}/{tenant}/oauth2/v2.0/token"
        try:
            with self.app.state.txn() as t:
                answer, oid, source = identity.token_grant(t.data, tenant, form, token_url)
                t.changed = True
            status = 200
            record.update(result="OK", principal=oid, credential=source)
        except identity.EntraError as err:
            status, answer = err.status, err.body()
            record.update(result=err.error, error_message=f"AADSTS{err.number}: {err.text}")
        record["http_status"] = status
        self._audit(record, started)  # before the answer: see _audit
        self._send(status, answer, [("Cache-Control", "no-store, no-cache")])

    def _imds(self, query):
        started = time.monotonic()
        self._body()
        record = self._record("IMDS", "GET")
        if self._fault("IMDS", record, started):
            return
        with self.app.state.txn() as t:
            status, answer = identity.imds_token(t.data, query, self.headers.get("Metadata"))
            t.changed = status == 200
        record.update(http_status=status, result="OK" if status == 200 else
                      answer.get("error_description"), resource=query.get("resource"),
                      client_id=query.get("client_id"))
        self._audit(record, started)  # before the answer: see _audit
        self._send(status, answer)

    # -- control API (tests only) -----------------------------------------------------------

    def _control(self, method, what):
        raw = self._body()
        try:
            spec = json.loads(raw or b"{}")
            status, answer = 200, self._control_do(method, what, spec)
        except KvError as err:
            status, answer = err.status, err.body()
        except (ValueError, KeyError, TypeError) as err:
            status, answer = 400, {"error": {"code": "BadParameter", "message": repr(err)}}
        self._send(status, answer if answer is not None else {})

    def _admin_vault(self, t, host):
        data = t.data
        return Vault(t, host, {"oid": data["apps"][ADMIN_APP]["object_id"],
                               "appid": ADMIN_APP})

    def _control_do(self, method, what, spec):
        if what == "health":
            return {"status": "ok"}
        with self.app.state.txn() as t:
            data = t.data
            if what == "faults":
                if method == "DELETE":
                    data["faults"] = []
                elif method == "POST":
                    for f in spec if isinstance(spec, list) else [spec]:
                        if f.get("fault") not in FAULTS:
                            raise KvError(400, "BadParameter", "fault must be one of " +
                                          ", ".join(sorted(FAULTS)))
                        if f.get("fault") == "latency" and f.get("latency_ms") is None:
                            raise KvError(400, "BadParameter", "latency needs latency_ms")
                        data["faults"].append({"operation": f.get("operation", "*"),
                                               "fault": f["fault"],
                                               "count": int(f.get("count", 1)),
                                               "latency_ms": f.get("latency_ms")})
                t.changed = method != "GET"
                return {"faults": data["faults"]}
            if what == "principals":
                return {"tenant": data["tenant"],
                        "apps": {a: {"name": v["name"], "object_id": v["object_id"]}
                                 for a, v in data["apps"].items()},
                        "imds": data["imds"]}
            if what in ("create-key", "rotate", "enabled", "delete", "recover", "purge"):
                host, name, version = split_key_id(spec["key_id"])
                v = self._admin_vault(t, host)
                if what == "create-key":
                    return v.create(name, {"kty": spec.get("kty", "RSA"),
                                           "key_size": spec.get("key_size"),
                                           "key_ops": spec.get("key_ops")})
                if what == "rotate":
                    return v.rotate(name)
                if what == "enabled":
                    return v.update(name, version, {"attributes":
                                                    {"enabled": bool(spec["enabled"])}})
                return getattr(v, what)(name)
            if what == "policy":
                host, entry = vault(data, spec["vault"])
                oid = principal_oid(data, spec["principal"])
                if spec.get("permissions") is None:
                    entry["policies"].pop(oid, None)
                else:
                    entry["policies"][oid] = list(spec["permissions"])
                t.changed = True
                return {"vault": host, "policies": entry["policies"]}
            if what == "challenge":
                # What the vault's 401 challenge names: another tenant, another resource
                # (null or absent: the real ones). Its expected audience does not change.
                host, entry = vault(data, spec["vault"])
                entry["challenge"] = {k: spec[k] for k in ("tenant", "resource")
                                      if spec.get(k)}
                t.changed = True
                return {"vault": host, "challenge": entry["challenge"]}
            if what == "certificate":
                x5t = identity.register_certificate(data, spec["client_id"],
                                                    spec["certificate"])
                t.changed = True
                return {"x5t": x5t}
            if what == "federated-token":
                token = identity.federated_token(data, spec["subject"],
                                                 int(spec.get("lifetime", 3600)))
                t.changed = True
                return {"token": token}
            if what == "tokens":
                if "lifetime" in spec:
                    data["token_lifetime"] = int(spec["lifetime"])
                if "expire" in spec:
                    for entry in data["tokens"].values():
                        if entry.get("issued_by") != "static" and spec["expire"] in (
                                "*", entry["oid"]):
                            entry["expires"] = time.time() - 1
                t.changed = True
                return {"token_lifetime": data["token_lifetime"]}
            if what == "imds":
                data["imds"].update({k: v for k, v in spec.items()
                                     if k in ("system_assigned",)})
                t.changed = True
                return data["imds"]
        raise KvError(404, "NotFound", f"no control endpoint {method} /_emulator/{what}")


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
        self.state = State(args.state)
        self._fd = (os.open(args.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    if args.audit_log else None)

    def audit(self, record):
        if self._fd is not None:
            os.write(self._fd, (json.dumps(record, sort_keys=True) + "\n").encode())


def main(argv=None):
    p = argparse.ArgumentParser(prog="azure-kv-emulator",
                                description="Azure Key Vault emulator for dmbyok's tests.")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--state", required=True, metavar="FILE")
    p.add_argument("--tls-cert", metavar="PEM")
    p.add_argument("--tls-key", metavar="PEM")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--audit-log", metavar="FILE")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--standby", action="store_true",
                   help="load, print 'azure-kv-emulator: standing by', bind on SIGUSR1")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        p.error("--listen wants HOST:PORT")

    def stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.standby:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    app = App(args)
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.standby:
        sys.stdout.write("azure-kv-emulator: standing by\n")
        sys.stdout.flush()
        signal.sigwait({signal.SIGUSR1})
    server = Server((host.strip("[]"), int(port)), Handler)
    server.app, server.verbose, server.tls_context = app, args.verbose, context
    bound_host, bound_port = server.server_address[:2]
    server.host_port = f"{bound_host}:{bound_port}"
    sys.stdout.write(f"azure-kv-emulator: listening on {'https' if context else 'http'}://"
                     f"{bound_host}:{bound_port}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
