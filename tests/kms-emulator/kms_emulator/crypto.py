"""The emulator's symmetric ciphertext blob (its own format, not AWS's).

    offset  size  field
    0       4     magic "KMSE"
    4       1     format version (1)
    5       36    key id (UUID text) -- lets Decrypt find the key by itself
    41      4     key material version (big-endian index into the key's
                  material list; rotation appends new material)
    45      12    AES-GCM nonce
    57      n+16  AES-256-GCM ciphertext and tag

The additional authenticated data is the 45-byte header followed by the
canonical encryption context (JSON, keys sorted, no spaces, UTF-8), so the
context must match exactly and the key id/version cannot be swapped.
"""

import json
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KMSError

MAGIC = b"KMSE"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sB36sI")
NONCE_LEN = 12
TAG_LEN = 16


def new_key_material():
    return os.urandom(32)


def canonical_context(context):
    return json.dumps(context or {}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _invalid():
    return KMSError("InvalidCiphertextException", "")


def seal(key_id, material_version, material, plaintext, context):
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, key_id.encode("ascii"),
                          material_version)
    nonce = os.urandom(NONCE_LEN)
    sealed = AESGCM(material).encrypt(nonce, plaintext,
                                      header + canonical_context(context))
    return header + nonce + sealed


def peek(blob):
    """(key id, material version) named by a blob; InvalidCiphertext if none."""
    if len(blob) < _HEADER.size + NONCE_LEN + TAG_LEN:
        raise _invalid()
    magic, version, key_id, material_version = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise _invalid()
    try:
        return key_id.decode("ascii"), material_version
    except UnicodeDecodeError:
        raise _invalid() from None


def unseal(blob, material, context):
    header = blob[:_HEADER.size]
    nonce = blob[_HEADER.size:_HEADER.size + NONCE_LEN]
    try:
        return AESGCM(material).decrypt(nonce, blob[_HEADER.size + NONCE_LEN:],
                                        header + canonical_context(context))
    except InvalidTag:
        raise _invalid() from None
