"""The emulator's world in one JSON state file.

Each request runs in `Store.transaction()`: an exclusive flock on FILE.lock (several
emulator processes, or a restarted one, share one world), a reload of FILE when it
changed on disk, and an atomic rewrite (temporary file + rename) when the request
changed something (set `txn.dirty`).
"""

import contextlib
import fcntl
import json
import os
import tempfile
import threading

from . import ADMIN, HOST_SA, OTHER_SA

STATE_VERSION = 1


def default_state():
    return {
        "version": STATE_VERSION,
        # Bearer tokens known up front (the OAuth endpoint and the metadata server add
        # issued ones). expires: Unix time, null for never.
        "tokens": {
            "admin-token": {"principal": ADMIN, "expires": None},
            "host-token": {"principal": "serviceAccount:" + HOST_SA, "expires": None},
            "other-token": {"principal": "serviceAccount:" + OTHER_SA, "expires": None},
            "expired-token": {"principal": "serviceAccount:" + HOST_SA, "expires": 1},
        },
        # Service accounts and the public keys of their JSON keys (kid -> PEM).
        "service_accounts": {HOST_SA: {"keys": {}}, OTHER_SA: {"keys": {}}},
        # What the GCE metadata server hands out.
        "metadata": {"service_account": HOST_SA, "project_id": "dmbyok-test",
                     "zone": "projects/123456789012/zones/europe-west1-b"},
        # Lifetime of issued access tokens (Google's: 3599 s).
        "token_lifetime": 3599,
        # IAM: the policy every project has (bindings role -> members), per-resource
        # policies set with setIamPolicy, and deny rules (IAM deny policies).
        "project_policy": {"bindings": [
            {"role": "roles/owner", "members": [ADMIN]},
            {"role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
             "members": ["serviceAccount:" + HOST_SA]},
            {"role": "roles/cloudkms.viewer", "members": ["serviceAccount:" + HOST_SA]},
        ]},
        "policies": {},
        "deny": [],
        "key_rings": {},
        "crypto_keys": {},
        "faults": [],
    }


class Transaction:
    def __init__(self, data):
        self.data = data
        self.dirty = False


class Store:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._lock_path = self.path + ".lock"
        self._mutex = threading.Lock()
        self._cache = None
        self._sig = None
        with self.transaction():
            pass

    def _signature(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self):
        sig = self._signature()
        if sig is None:
            self._cache, self._sig = default_state(), None
            return True
        if sig != self._sig:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            for name, value in default_state().items():
                data.setdefault(name, value)
            self._cache, self._sig = data, sig
        return False

    def _save(self):
        fd, tmp = tempfile.mkstemp(prefix=".gcp-kms-state.", dir=os.path.dirname(self.path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._cache, f, indent=1, sort_keys=True)
                f.write("\n")
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sig = self._signature()

    @contextlib.contextmanager
    def transaction(self):
        from .errors import GoogleError
        with self._mutex, open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                created = self._load()
                txn = Transaction(self._cache)
                try:
                    yield txn
                except GoogleError:
                    # Methods check before they change; keep deliberate changes (a
                    # destruction that came due on the way).
                    if txn.dirty:
                        self._save()
                    raise
                except BaseException:
                    self._cache = self._sig = None
                    raise
                if txn.dirty or created:
                    self._save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
