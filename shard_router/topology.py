from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shard_router.slots import SLOT_COUNT, slot_of

SHARD_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")  # match() anchors the start; \Z the end


IDS_SEARCHED_MAX = 100_000
# Routes remembered per Topology (it never changes, so they never go stale); emptied when
# full. A batch routes each account several times: CRC32 once is enough.
ROUTES_CACHED_MAX = 1 << 20


class TopologyError(ValueError):
    """A topology document that cannot be used for routing."""


@dataclass(frozen=True)
class LedgerServer:
    """One ledger partition: its database, and the streams it holds (a stream is one shard's
    events, named by the shard). Every shard's stream is on exactly one ledger server."""

    dsn: str
    streams: tuple[str, ...]


FIRST_LEDGER = "ledger"  # the name of a topology's only (or first) ledger server


@dataclass(frozen=True)
class Topology:
    """Which shard owns each slot, at one version.

    `slots[i]` is the name of the shard that owns slot i; `overrides` pins single
    accounts to a shard (the directory), whatever their slot says.
    """

    version: int
    shards: Mapping[str, str]  # shard name -> DSN
    slots: tuple[str, ...]
    overrides: Mapping[str, str] = field(default_factory=dict)
    # The event ledger's partitions by name (none: this deployment keeps no ledger).
    ledgers: Mapping[str, LedgerServer] = field(default_factory=dict)
    # Routes remembered (not part of the value: equality and documents ignore it).
    _routes: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise TopologyError("topology version must be a positive integer")
        if not self.shards:
            raise TopologyError("topology must name at least one shard")
        for name, dsn in self.shards.items():
            if not SHARD_NAME_PATTERN.match(name):
                raise TopologyError(f"shard name {name!r} must match {SHARD_NAME_PATTERN.pattern}")
            if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
                raise TopologyError(f"shard {name!r} needs a postgresql:// DSN")
        if len(self.slots) != SLOT_COUNT:
            raise TopologyError(f"topology must map all {SLOT_COUNT} slots, got {len(self.slots)}")
        unknown = set(self.slots) - set(self.shards)
        if unknown:
            raise TopologyError(f"slots map to unknown shards: {sorted(unknown)}")
        self._check_ledgers()
        for account_id, shard in self.overrides.items():
            if shard not in self.shards:
                raise TopologyError(f"override for {account_id!r} names unknown shard {shard!r}")
        # Freeze the mappings so a shared Topology cannot change under a router.
        object.__setattr__(self, "shards", MappingProxyType(dict(self.shards)))
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        object.__setattr__(
            self,
            "ledgers",
            MappingProxyType(
                {name: LedgerServer(server.dsn, tuple(sorted(server.streams))) for name, server in self.ledgers.items()}
            ),
        )

    def _check_ledgers(self) -> None:
        """Each ledger server well named and addressed; each shard's stream on exactly one."""
        holder: dict[str, str] = {}
        for name, server in sorted(self.ledgers.items()):
            if not SHARD_NAME_PATTERN.match(name):
                raise TopologyError(f"ledger name {name!r} must match {SHARD_NAME_PATTERN.pattern}")
            if not isinstance(server.dsn, str) or not server.dsn.startswith(("postgresql://", "postgres://")):
                raise TopologyError(f"ledger {name!r} needs a postgresql:// DSN")
            for stream in server.streams:
                if stream in holder:
                    raise TopologyError(f"stream {stream!r} is assigned to two ledgers: {holder[stream]} and {name}")
                if stream not in self.shards:
                    raise TopologyError(f"ledger {name!r} holds stream {stream!r}, but there is no shard {stream!r}")
                holder[stream] = name
        if self.ledgers:
            unassigned = sorted(set(self.shards) - set(holder))
            if unassigned:
                raise TopologyError(
                    f"stream {unassigned[0]!r} (shard {unassigned[0]}'s events) is assigned to no ledger"
                    + (f", nor are {unassigned[1:]}" if unassigned[1:] else "")
                )

    def ledger_of(self, stream: str) -> str:
        """The ledger server that holds `stream`."""
        for name, server in self.ledgers.items():
            if stream in server.streams:
                return name
        raise TopologyError(f"no ledger holds stream {stream!r}")

    def with_ledgers(self, ledgers: Mapping[str, LedgerServer]) -> Topology:
        """The same placement of accounts with another placement of streams, one version up."""
        return Topology(self.version + 1, self.shards, self.slots, self.overrides, ledgers)

    def with_stream_on(self, stream: str, ledger: str) -> Topology:
        """`stream` held by `ledger` from now on, one version up."""
        assert ledger in self.ledgers, f"no ledger {ledger!r}"
        return self.with_ledgers(
            {
                name: LedgerServer(
                    server.dsn,
                    tuple(
                        sorted({*(s for s in server.streams if s != stream), *((stream,) if name == ledger else ())})
                    ),
                )
                for name, server in self.ledgers.items()
            }
        )

    def with_ledger_server(self, name: str, dsn: str) -> Topology:
        """A ledger server added (holding no streams yet: new shards' streams go to it, and
        streams move to it) or readdressed, one version up."""
        held = self.ledgers[name].streams if name in self.ledgers else ()
        return self.with_ledgers({**self.ledgers, name: LedgerServer(dsn, held)})

    def with_shard(self, name: str, dsn: str) -> Topology:
        """A shard added (owning no slots yet; its stream on the ledger holding fewest) or readdressed."""
        ledgers = dict(self.ledgers)
        if name not in self.shards and ledgers:
            fewest = min(sorted(ledgers), key=lambda ledger: len(ledgers[ledger].streams))
            ledgers[fewest] = LedgerServer(ledgers[fewest].dsn, (*ledgers[fewest].streams, name))
        return Topology(self.version + 1, {**self.shards, name: dsn}, self.slots, self.overrides, ledgers)

    @classmethod
    def even(
        cls,
        shards: Mapping[str, str],
        version: int = 1,
        ledger: str | None = None,
        ledgers: Mapping[str, str] | None = None,
    ) -> Topology:
        """Contiguous, equal slot ranges over the shards in name order; the streams dealt
        over the ledger servers (`ledgers`: name -> DSN; or one, `ledger`) in turn."""
        names = sorted(shards)
        assert names, "at least one shard is needed"
        slots = tuple(names[slot * len(names) // SLOT_COUNT] for slot in range(SLOT_COUNT))
        return cls(version=version, shards=shards, slots=slots, ledgers=deal_streams(names, ledger, ledgers))

    def shard_of(self, account_id: str) -> str:
        routes = self._routes
        shard = routes.get(account_id)
        if shard is None:
            shard = self.overrides.get(account_id)
            if shard is None:
                shard = self.slots[slot_of(account_id)]
            if len(routes) >= ROUTES_CACHED_MAX:
                routes.clear()
            routes[account_id] = shard
        return shard

    def ids_on(self, shard: str, count: int, prefix: str) -> list[str]:
        """`count` account ids `<prefix>-<n>` that route to `shard` (tests, benchmarks, chaos)."""
        assert shard in self.shards, f"no shard {shard!r}"
        found: list[str] = []
        if count <= 0:
            return found
        for index in range(IDS_SEARCHED_MAX):
            candidate = f"{prefix}-{index}"
            if self.shard_of(candidate) == shard:
                found.append(candidate)
                if len(found) == count:
                    return found
        raise AssertionError(f"fewer than {count} of {IDS_SEARCHED_MAX} ids route to {shard}")

    def slots_of(self, shard: str) -> list[int]:
        return [slot for slot, owner in enumerate(self.slots) if owner == shard]

    def with_shards(self, shards: Mapping[str, str], ledgers: Mapping[str, str] | None = None) -> Topology:
        """The same placement with new addresses (e.g. a restarted local cluster), one version
        up; `ledgers` readdresses ledger servers by name."""
        assert set(shards) == set(self.shards), "with_shards changes addresses, not the shard set"
        readdressed = {
            name: LedgerServer((ledgers or {}).get(name, server.dsn), server.streams)
            for name, server in self.ledgers.items()
        }
        return Topology(self.version + 1, shards, self.slots, self.overrides, readdressed)

    # The document form keeps slot ranges, not 4096 names: readable and diffable.
    def to_document(self) -> dict[str, Any]:
        ranges: list[dict[str, Any]] = []
        for slot, shard in enumerate(self.slots):
            if ranges and ranges[-1]["shard"] == shard:
                ranges[-1]["last"] = slot
            else:
                ranges.append({"first": slot, "last": slot, "shard": shard})
        return {
            "version": self.version,
            "slot_count": SLOT_COUNT,
            "shards": {name: {"dsn": dsn} for name, dsn in sorted(self.shards.items())},
            "slots": ranges,
            "overrides": dict(sorted(self.overrides.items())),
            **(
                {
                    "ledgers": {
                        name: {"dsn": server.dsn, "streams": list(server.streams)}
                        for name, server in sorted(self.ledgers.items())
                    }
                }
                if self.ledgers
                else {}
            ),
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Topology:
        try:
            if document.get("slot_count") != SLOT_COUNT:
                raise TopologyError(f"slot_count must be {SLOT_COUNT}")
            slots: list[str | None] = [None] * SLOT_COUNT
            for entry in document["slots"]:
                first, last, shard = (
                    _integer(entry["first"], "first"),
                    _integer(entry["last"], "last"),
                    str(entry["shard"]),
                )
                if not 0 <= first <= last < SLOT_COUNT:
                    raise TopologyError(f"slot range {first}..{last} is outside 0..{SLOT_COUNT - 1}")
                for slot in range(first, last + 1):
                    if slots[slot] is not None:
                        raise TopologyError(f"slot {slot} is mapped twice")
                    slots[slot] = shard
            owners = tuple(shard for shard in slots if shard is not None)
            if len(owners) != SLOT_COUNT:
                missing = [slot for slot, shard in enumerate(slots) if shard is None]
                raise TopologyError(f"{len(missing)} slots are unmapped, first {missing[0]}")
            shards = {str(name): str(spec["dsn"]) for name, spec in document["shards"].items()}
            return cls(
                version=_integer(document["version"], "version"),
                shards=shards,
                slots=owners,
                overrides={str(k): str(v) for k, v in document.get("overrides", {}).items()},
                ledgers=_ledgers_of(document, shards),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise TopologyError(f"malformed topology document: {error!r}") from error


def deal_streams(shards: list[str], ledger: str | None, ledgers: Mapping[str, str] | None) -> dict[str, LedgerServer]:
    """Every shard's stream on one of the ledger servers, dealt in turn (name order)."""
    servers = dict(ledgers or ({FIRST_LEDGER: ledger} if ledger else {}))
    names = sorted(servers)
    return {
        name: LedgerServer(servers[name], tuple(s for i, s in enumerate(sorted(shards)) if i % len(names) == n))
        for n, name in enumerate(names)
    }


def _ledgers_of(document: Mapping[str, Any], shards: Mapping[str, str]) -> dict[str, LedgerServer]:
    """The document's ledger servers; one written as `"ledger": {"dsn": ...}` (the form
    before partitions) holds every stream."""
    if document.get("ledgers") and document.get("ledger"):
        raise TopologyError("a topology names its ledger servers once: `ledgers`, or the older `ledger`")
    if document.get("ledger"):
        return {FIRST_LEDGER: LedgerServer(str(document["ledger"]["dsn"]), tuple(sorted(shards)))}
    found: dict[str, LedgerServer] = {}
    for name, spec in (document.get("ledgers") or {}).items():
        streams = spec["streams"]
        if not isinstance(streams, list) or not all(isinstance(stream, str) for stream in streams):
            raise TopologyError(f"ledger {name!r}: streams must be a list of shard names")
        if len(set(streams)) != len(streams):
            raise TopologyError(f"ledger {name!r} names a stream twice")
        found[str(name)] = LedgerServer(str(spec["dsn"]), tuple(streams))
    return found


def _integer(value: Any, name: str) -> int:
    """A JSON integer, exactly: no strings, fractions or booleans silently converted."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError(f"{name} must be an integer, got {value!r}")
    return value
