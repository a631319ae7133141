"""Who a party is: one Ed25519 key that signs, and, converted to X25519, decrypts.

A party is named everywhere (topics, broker usernames, message fields) by its public key
as 64 lowercase hex characters. The key file holds the 32-byte Ed25519 seed in one line
of text, `proofmarket-ed25519-v1:<64 hex>`, and must be readable by its owner only.
"""

from __future__ import annotations

import functools
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions

from protocol.errors import BadKeyFile, BadPublicKey

KEY_FILE_PREFIX: Final = "proofmarket-ed25519-v1:"
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_MAX_KEY_FILE: Final = 256  # a real key file is 88 bytes; never read more than this
BOX_CACHE_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A validated Ed25519 public key; `raw` is its 32 bytes, `hex` its name."""

    raw: bytes
    curve: bytes = field(repr=False, compare=False)  # the X25519 form, for Box

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublicKey:
        """Validate 32 raw bytes as an Ed25519 point usable for signing and Box."""
        if len(raw) != sodium.crypto_sign_PUBLICKEYBYTES:
            raise BadPublicKey(f"a public key is 32 bytes, not {len(raw)}")
        try:
            curve = sodium.crypto_sign_ed25519_pk_to_curve25519(bytes(raw))
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise BadPublicKey("not a valid Ed25519 public key") from exc
        return cls(bytes(raw), curve)

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        """Parse the 64-lowercase-hex form used in topics, usernames and messages."""
        if len(text) != 64 or not _HEX_DIGITS.issuperset(text):
            raise BadPublicKey("a public key is 64 lowercase hex characters")
        return cls.from_bytes(bytes.fromhex(text))

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex


class Identity:
    """A party's secret key, with the Box keys it has precomputed for its peers."""

    __slots__ = ("_boxes", "_curve_secret", "_seed", "_signing", "public_hex", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != sodium.crypto_sign_SEEDBYTES:
            raise BadKeyFile(f"an identity seed is 32 bytes, not {len(seed)}")
        public, secret = sodium.crypto_sign_seed_keypair(bytes(seed))
        self._seed = bytes(seed)
        self._signing: bytes = secret
        self._curve_secret: bytes = sodium.crypto_sign_ed25519_sk_to_curve25519(secret)
        self._boxes: OrderedDict[bytes, bytes] = OrderedDict()
        self.public_key = PublicKey.from_bytes(public)
        self.public_hex = self.public_key.hex

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's randomness."""
        return cls(os.urandom(sodium.crypto_sign_SEEDBYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """A deterministic identity, for simulations and tests."""
        return cls(seed)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key file, refusing loose permissions, wrong sizes and garbage."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                data = handle.read(_MAX_KEY_FILE + 1)
        except OSError as exc:
            raise BadKeyFile(f"cannot read key file {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(mode):
            raise BadKeyFile(f"key file {path} is not a regular file")
        if mode & 0o077:
            raise BadKeyFile(
                f"key file {path} has mode {stat.S_IMODE(mode):04o}; others may read it"
                f" (run: chmod 600 {path})"
            )
        return cls(_parse_key_file(path, data))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key file with mode 0600, atomically; refuse to replace one unless told."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a key")
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # The umask can only remove bits; fchmod makes 0600 exact whatever it is.
            os.fchmod(fd, 0o600)
            os.write(fd, f"{KEY_FILE_PREFIX}{self._seed.hex()}\n".encode("ascii"))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        try:
            if overwrite:
                os.replace(temporary, path)
            else:
                os.link(temporary, path)  # fails if a key appeared meanwhile: never clobber
        finally:
            if temporary.exists():
                os.unlink(temporary)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        signed: bytes = sodium.crypto_sign(data, self._signing)
        return signed[: sodium.crypto_sign_BYTES]

    def box_key(self, peer: PublicKey | bytes) -> bytes:
        """The precomputed Box key shared with `peer` (cached: the X25519 step is slow).

        `peer` may be raw key bytes straight off the wire; they are validated on a miss.
        """
        raw = peer.raw if isinstance(peer, PublicKey) else peer
        key = self._boxes.get(raw)
        if key is not None:
            self._boxes.move_to_end(raw)
            return key
        public = peer if isinstance(peer, PublicKey) else PublicKey.from_bytes(raw)
        key = sodium.crypto_box_beforenm(public.curve, self._curve_secret)
        self._boxes[public.raw] = key
        if len(self._boxes) > BOX_CACHE_SIZE:
            self._boxes.popitem(last=False)
        return key

    def __repr__(self) -> str:
        return f"Identity({self.public_hex})"


@functools.lru_cache(maxsize=BOX_CACHE_SIZE)
def valid_public_key(text: str) -> bool:
    """Whether `text` names a usable public key (hex form, and a valid Ed25519 point).

    Cached: topics name the same few thousand parties over and over.
    """
    try:
        PublicKey.from_hex(text)
    except BadPublicKey:
        return False
    return True


def _parse_key_file(path: Path, data: bytes) -> bytes:
    if len(data) > _MAX_KEY_FILE:
        raise BadKeyFile(f"key file {path} is too large to be a proofmarket key")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise BadKeyFile(f"key file {path} is not a proofmarket key (not text)") from exc
    if not text.startswith(KEY_FILE_PREFIX):
        raise BadKeyFile(f"key file {path} is not a proofmarket key (no {KEY_FILE_PREFIX!r})")
    digits = text[len(KEY_FILE_PREFIX) :]
    if len(digits) != 64:
        raise BadKeyFile(f"key file {path} holds {len(digits)} hex digits, expected 64")
    if not _HEX_DIGITS.issuperset(digits):
        raise BadKeyFile(f"key file {path} holds characters that are not lowercase hex")
    return bytes.fromhex(digits)
