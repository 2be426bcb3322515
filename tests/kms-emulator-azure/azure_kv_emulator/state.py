"""The emulator's world in one JSON file, shared by every process that serves it.

A request runs in `State.txn()`: an exclusive flock on FILE.lock, FILE re-read when another
process changed it, and written back atomically (write + rename) when the request set
`txn.changed`. Several emulators (a stand-by taking over, the VM scenario's restarts) thus
serve one world.
"""

import contextlib
import fcntl
import json
import os
import threading

from . import (ADMIN_APP, FEDERATED_AUDIENCE, FEDERATED_ISSUER,
               FEDERATED_SUBJECT, HOST_APP, MI_SYSTEM_OID, MI_USER_CLIENT, MI_USER_OID,
               OTHER_APP, TENANT, WORKLOAD_APP)

# What a principal needs for dmbyok (GET, versions for a re-wrap, wrap, unwrap) and all.
HOST_PERMISSIONS = ["get", "list", "wrapKey", "unwrapKey"]
ALL_PERMISSIONS = ["get", "list", "create", "update", "import", "delete", "recover", "backup",
                   "restore", "purge", "rotate", "encrypt", "decrypt", "wrapKey", "unwrapKey",
                   "sign", "verify", "getrotationpolicy", "setrotationpolicy", "release"]


def _oid(app_id):
    return "0b" + app_id[2:]


def initial():
    apps = {
        ADMIN_APP: {"name": "dmbyok-admin", "secrets": ["admin-secret"]},
        HOST_APP: {"name": "dmbyok-host", "secrets": ["host-secret"]},
        OTHER_APP: {"name": "dmbyok-other", "secrets": ["other-secret"]},
        WORKLOAD_APP: {"name": "dmbyok-workload", "secrets": [],
                       "federated": [{"issuer": FEDERATED_ISSUER, "subject": FEDERATED_SUBJECT,
                                      "audience": FEDERATED_AUDIENCE}]},
    }
    for app_id, app in apps.items():
        app["object_id"] = _oid(app_id)
        app.setdefault("certificates", {})
        app.setdefault("federated", [])
    return {
        "version": 1,
        "tenant": TENANT,
        "apps": apps,
        # IMDS: the VM's system-assigned identity and its user-assigned ones (client id ->
        # object id); "system_assigned": false makes "Identity not found" the answer.
        "imds": {"system_assigned": True, "system_oid": MI_SYSTEM_OID,
                 "user_assigned": {MI_USER_CLIENT: MI_USER_OID}},
        # The federated-credential issuer's public key (PEM), made on first use.
        "issuer_key": None,
        "tokens": {"admin-token": {"oid": apps[ADMIN_APP]["object_id"], "appid": ADMIN_APP,
                                   "resource": "*", "expires": None, "issued_by": "static"}},
        "token_lifetime": 3599,
        # Access policies every new vault starts with: object id -> key permissions.
        "default_policies": {
            apps[ADMIN_APP]["object_id"]: ALL_PERMISSIONS,
            apps[HOST_APP]["object_id"]: HOST_PERMISSIONS,
            apps[WORKLOAD_APP]["object_id"]: HOST_PERMISSIONS,
            MI_SYSTEM_OID: HOST_PERMISSIONS,
            MI_USER_OID: HOST_PERMISSIONS,
        },
        "vaults": {},
        "faults": [],
    }


def vault(data, host):
    """The vault served at `host` (created with the default policies on first use)."""
    host = host.lower()
    if host.endswith(":443"):
        host = host[:-4]
    if host not in data["vaults"]:
        data["vaults"][host] = {"keys": {}, "deleted": {},
                                "policies": {k: list(v) for k, v in
                                             data["default_policies"].items()}}
    return host, data["vaults"][host]


class Txn:
    def __init__(self, data):
        self.data = data
        self.changed = False


class State:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._guard = threading.Lock()
        self._data = None
        self._stamp = None
        with self.txn() as t:
            t.changed = not os.path.exists(self.path)

    def _stamp_now(self):
        try:
            st = os.stat(self.path)
            return st.st_ino, st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def txn(self):
        with self._guard, open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                stamp = self._stamp_now()
                if stamp is None:
                    self._data = initial()
                elif stamp != self._stamp:
                    with open(self.path, encoding="utf-8") as f:
                        self._data = json.load(f)
                self._stamp = stamp
                t = Txn(self._data)
                ok = False
                try:
                    yield t
                    ok = True
                finally:
                    # Errors raised after a deliberate change (a fault consumed) keep it.
                    if t.changed:
                        tmp = f"{self.path}.{os.getpid()}.tmp"
                        with open(tmp, "w", encoding="utf-8") as f:
                            json.dump(self._data, f, indent=1, sort_keys=True)
                        os.replace(tmp, self.path)
                        self._stamp = self._stamp_now()
                    elif not ok:
                        self._stamp = None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
