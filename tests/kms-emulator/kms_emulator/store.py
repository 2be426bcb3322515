"""The emulator's world, kept in one JSON state file.

Every request runs inside `Store.transaction()`: an exclusive flock on
FILE.lock (so several emulator processes, or a restarted one, share one
world), a reload of FILE if it changed on disk, and an atomic rewrite
(temporary file + rename) if the request changed anything.
"""

import contextlib
import fcntl
import json
import os
import tempfile
import threading

from . import ACCOUNT_ID
from .errors import KMSError

STATE_VERSION = 1


def default_state():
    """A fresh world: no keys, and the documented test principals."""
    return {
        "version": STATE_VERSION,
        "account_id": ACCOUNT_ID,
        "principals": {
            "AKIDHOST000000000001": {
                "secret": "hostsecret",
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/dmbyok-host"},
            "AKIDCUSTOMER00000001": {
                "secret": "customersecret",
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/customer-admin"},
            "AKIDEXPIRED000000001": {
                "secret": "expiredsecret",
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/dmbyok-host",
                "session_token": "expired-token",
                "expired": True},
            "ASIAHOST000000000001": {
                "secret": "hostsessionsecret",
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/dmbyok-host",
                "session_token": "host-session-token"},
        },
        # Which principal EC2 IMDS and the container endpoint hand out.
        "instance_role": {"name": "dmbyok-host",
                          "access_key_id": "ASIAHOST000000000001"},
        # Required value of the Authorization header on /container/credentials
        # (null: no header needed).
        "container_auth_token": "container-auth-token",
        # IAM roles STS may hand out sessions of (created via the control API),
        # and STS's session durations.
        "roles": {},
        "sts": {"default_duration": 3600, "min_duration": 900},
        "keys": {},
        "aliases": {},
        "grants": {},
        "faults": [],
    }


class Transaction:
    """The state as one request sees it; set `dirty` after changing `data`."""

    def __init__(self, data):
        self.data = data
        self.dirty = False


class Store:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        self._lock_path = self.path + ".lock"
        self._mutex = threading.Lock()
        self._cache = None
        self._cache_sig = None
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
            self._cache, self._cache_sig = default_state(), None
            return True  # must be written out
        if sig != self._cache_sig:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            fresh = default_state()
            for name, value in fresh.items():
                data.setdefault(name, value)
            self._cache, self._cache_sig = data, sig
        return False

    def _save(self):
        directory = os.path.dirname(self.path)
        fd, tmp = tempfile.mkstemp(prefix=".kms-state.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._cache, f, indent=1, sort_keys=True)
                f.write("\n")
            os.rename(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._cache_sig = self._signature()

    @contextlib.contextmanager
    def transaction(self):
        with self._mutex:
            with open(self._lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    created = self._load()
                    txn = Transaction(self._cache)
                    try:
                        yield txn
                    except KMSError:
                        # Operations check before they change anything, so a
                        # KMS error leaves a consistent state; keep what was
                        # deliberately changed (e.g. an expired deletion).
                        if txn.dirty:
                            self._save()
                        raise
                    except BaseException:
                        # The request may have half-changed the cached copy:
                        # forget it so the next request rereads the file.
                        self._cache = self._cache_sig = None
                        raise
                    if txn.dirty or created:
                        self._save()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
