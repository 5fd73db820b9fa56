"""Anchored chain heads: each stream's (position, hash), signed, kept where the ledger
database cannot rewrite it.

A superuser can rewrite a stream's tail and recompute every hash after it: the chain then
verifies. A checkpoint taken before the rewrite still holds the old hash at its position,
signed with an Ed25519 key the database does not hold, in an append-only file (and, with
ZooKeeper, a sequential znode): `wallet ledger verify` compares the chain with every anchor
and names the stream and where the rewrite begins (after the last anchor that still
matches, at or before the first that does not). An anchor edited by hand fails its
signature and is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.domain.errors import ConfigurationError
from ledger.partitions import LedgerPartitions, Partition

FORMAT = "wallet-ledger-anchor/1"
ZNODE = "ledger-anchors"  # under the ZooKeeper root
ANCHORS_MAX = 1_000_000  # read from a file or ZooKeeper at most (about a year at one a minute)
HEADS = """
SELECT e.stream, e.position, e.hash FROM ledger_heads h
JOIN ledger_events e ON e.stream = h.stream AND e.position = h.position
WHERE h.stream = ANY($1::text[]) ORDER BY e.stream
"""
HASHES_AT = """
SELECT k.stream, k.position, e.hash FROM unnest($1::text[], $2::bigint[]) AS k(stream, position)
LEFT JOIN ledger_events e ON e.stream = k.stream AND e.position = k.position
"""


class AnchorStore(Protocol):
    """Where anchors are kept beside the file: a ZooKeeper node (shard_router's client)."""

    def append(self, line: bytes) -> None: ...
    def lines(self) -> list[bytes]: ...


@dataclass(frozen=True)
class Anchor:
    taken_at: str
    heads: dict[str, tuple[int, str]]  # stream -> (position, hash hex)
    source: str  # where it was read: "FILE line N" or "zookeeper NODE"


@dataclass(frozen=True)
class Rewrite:
    stream: str
    first_position: int  # the rewrite begins at or after this position ...
    last_position: int  # ... and at or before this one
    anchored_at: str
    reason: str

    def __str__(self) -> str:
        where = (
            f"position {self.first_position}"
            if self.first_position == self.last_position
            else f"a position in {self.first_position}..{self.last_position}"
        )
        return (
            f"stream {self.stream}: {self.reason}; the first position that differs is {where} "
            f"(anchored {self.anchored_at})"
        )


# -- keys ------------------------------------------------------------------------------------
def load_signing_key(path: Path, create: bool = False) -> Ed25519PrivateKey:
    """The Ed25519 private key at `path` (PEM, PKCS#8); made there (mode 0600) if asked."""
    if not path.exists():
        if not create:
            raise ConfigurationError(
                f"no ledger signing key at {path}: `wallet ledger checkpoint` makes one, or set WALLET_LEDGER_KEY_FILE"
            )
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return key
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigurationError(f"WALLET_LEDGER_KEY_FILE: cannot read an Ed25519 key from {path} ({error})") from error
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigurationError(f"WALLET_LEDGER_KEY_FILE: {path} holds a {type(loaded).__name__}, not an Ed25519 key")
    return loaded


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


# -- anchors -----------------------------------------------------------------------------------
def _signed_part(document: dict[str, Any]) -> bytes:
    return json.dumps(
        {k: v for k, v in document.items() if k != "signature"}, sort_keys=True, separators=(",", ":")
    ).encode()


def sign_heads(key: Ed25519PrivateKey, heads: dict[str, tuple[int, bytes]], taken_at: datetime) -> bytes:
    """One anchor line: the heads, the moment, the public key, and the signature over them."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "taken_at": taken_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "heads": {stream: [position, digest.hex()] for stream, (position, digest) in sorted(heads.items())},
        "key": public_hex(key.public_key()),
    }
    document["signature"] = key.sign(_signed_part(document)).hex()
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def parse_anchor(line: bytes, source: str, public_key: Ed25519PublicKey) -> Anchor:
    """An anchor line, refused (ConfigurationError naming `source`) unless it is well formed,
    signed by `public_key`, and the signature holds."""
    try:
        document = json.loads(line)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} line")
        signature = bytes.fromhex(document["signature"])
        heads = {str(s): (int(p), str(h)) for s, (p, h) in document["heads"].items()}
        taken_at = str(document["taken_at"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"{source}: not a ledger anchor ({error}): refused") from error
    if document.get("key") != public_hex(public_key):
        raise ConfigurationError(f"{source}: signed with another key ({document.get('key')}): refused")
    try:
        public_key.verify(signature, _signed_part(document))
    except InvalidSignature as error:
        raise ConfigurationError(f"{source}: bad signature (the anchor was edited): refused") from error
    return Anchor(taken_at, heads, source)


def append_to_file(path: Path, line: bytes) -> None:
    """Append one line (O_APPEND: never rewritten in place), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_file(path: Path, public_key: Ed25519PublicKey) -> list[Anchor]:
    if not path.exists():
        return []
    anchors = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if number > ANCHORS_MAX:
                raise ConfigurationError(f"{path}: more than {ANCHORS_MAX} anchors; rotate the file")
            if line.strip():
                anchors.append(parse_anchor(line, f"{path} line {number}", public_key))
    return anchors


async def chain_heads(ledger: LedgerPartitions) -> dict[str, tuple[int, bytes]]:
    """Every stream's head, each from the server that holds it."""

    async def one(partition: Partition) -> dict[str, tuple[int, bytes]]:
        async with partition.connection() as connection:
            rows = await connection.fetch(HEADS, list(partition.streams))
        return {row[0]: (row[1], bytes(row[2])) for row in rows}

    found = await ledger.each(one)
    return {stream: head for heads in found.values() for stream, head in heads.items()}


async def checkpoint(
    ledger: LedgerPartitions, key: Ed25519PrivateKey, anchor_file: Path, store: AnchorStore | None = None
) -> dict[str, tuple[int, bytes]]:
    """Sign every stream's head now and append it to the file (and the store)."""
    heads = await chain_heads(ledger)
    line = sign_heads(key, heads, datetime.now(UTC))
    append_to_file(anchor_file, line)
    if store is not None:
        store.append(line)
    return heads


async def hashes_at(ledger: LedgerPartitions, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str | None]:
    """The hash (hex) at each (stream, position), read from the server holding the stream; a
    stream no server holds has none."""
    held = {stream for name in ledger.names() for stream in ledger[name].streams}

    async def one(partition: Partition) -> dict[tuple[str, int], str | None]:
        mine = [k for k in keys if k[0] in partition.streams]
        if not mine:
            return {}
        async with partition.connection() as connection:
            rows = await connection.fetch(HASHES_AT, [k[0] for k in mine], [k[1] for k in mine])
        return {(row[0], row[1]): (bytes(row[2]).hex() if row[2] is not None else None) for row in rows}

    found = await ledger.each(one)
    stored = {key: digest for answers in found.values() for key, digest in answers.items()}
    return {key: stored.get(key) if key[0] in held else None for key in keys}


async def check_anchors(ledger: LedgerPartitions, anchors: list[Anchor]) -> list[Rewrite]:
    """Per stream, every anchored position against the chain as stored now."""
    anchored: dict[str, list[tuple[int, str, str]]] = {}  # stream -> (position, hash hex, when)
    for anchor in anchors:
        for stream, (position, digest) in anchor.heads.items():
            if position > 0:
                anchored.setdefault(stream, []).append((position, digest, anchor.taken_at))
    keys = sorted({(stream, position) for stream, marks in anchored.items() for position, _, _ in marks})
    stored = await hashes_at(ledger, keys) if keys else {}
    rewrites = []
    for stream, marks in sorted(anchored.items()):
        matched = 0  # the highest anchored position that still matches, below the first that does not
        for position, digest, when in sorted(marks):
            now = stored.get((stream, position))
            if now == digest:
                matched = position
                continue
            reason = (
                f"the event at position {position} is gone"
                if now is None
                else f"the event at position {position} no longer has the hash anchored for it"
            )
            rewrites.append(Rewrite(stream, matched + 1, position, when, reason))
            break
    return rewrites


class ZooKeeperAnchors:
    """Anchors as sequential znodes under `<root>/ledger-anchors` (kazoo's client; a
    ZooKeeper ACL that the ledger's operators lack keeps them out of one person's reach)."""

    def __init__(self, client: Any, root: str) -> None:
        self.client = client
        self.path = f"{root}/{ZNODE}"

    def append(self, line: bytes) -> None:
        self.client.create(f"{self.path}/anchor-", line, sequence=True, makepath=True)

    def lines(self) -> list[bytes]:
        if not self.client.exists(self.path):
            return []
        children = sorted(self.client.get_children(self.path))[-ANCHORS_MAX:]
        return [self.client.get(f"{self.path}/{child}")[0] for child in children]


def read_store(store: AnchorStore, public_key: Ed25519PublicKey, name: str) -> list[Anchor]:
    return [parse_anchor(line, f"{name} anchor {number}", public_key) for number, line in enumerate(store.lines(), 1)]
