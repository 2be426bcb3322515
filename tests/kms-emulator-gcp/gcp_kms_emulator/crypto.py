"""CRC32C (Castagnoli, as Cloud KMS's integrity fields use) and the ciphertext format.

Ciphertext (the emulator's own, not Google's):
  b"GKMS" | 0x01 | key uid (16 bytes) | version number (u32 BE) | nonce (12) |
  AES-256-GCM(ciphertext + tag) with AAD = that header + the request's AAD.
A blob of one key never decrypts under another (the uid and the key material differ),
nor with other additional authenticated data.
"""

import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"GKMS\x01"
HEADER = len(MAGIC) + 16 + 4

_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def new_material():
    return AESGCM.generate_key(bit_length=256)


def seal(uid, number, material, plaintext, aad):
    header = MAGIC + uid + struct.pack(">I", number)
    nonce = os.urandom(12)
    return header + nonce + AESGCM(material).encrypt(nonce, plaintext, header + aad)


def parse(blob):
    """(key uid, version number) of a blob, or None when it is not one of ours."""
    if len(blob) < HEADER + 12 + 16 or not blob.startswith(MAGIC):
        return None
    return blob[5:21], struct.unpack(">I", blob[21:25])[0]


def open_(material, blob, aad):
    """The plaintext, or None when the blob or the AAD is wrong."""
    from cryptography.exceptions import InvalidTag
    header, nonce, body = blob[:HEADER], blob[HEADER:HEADER + 12], blob[HEADER + 12:]
    try:
        return AESGCM(material).decrypt(nonce, body, header + aad)
    except InvalidTag:
        return None
