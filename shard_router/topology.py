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
class Topology:
    """Which shard owns each slot, at one version.

    `slots[i]` is the name of the shard that owns slot i; `overrides` pins single
    accounts to a shard (the directory), whatever their slot says.
    """

    version: int
    shards: Mapping[str, str]  # shard name -> DSN
    slots: tuple[str, ...]
    overrides: Mapping[str, str] = field(default_factory=dict)
    ledger: str | None = None  # DSN of the event ledger's database
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
        if self.ledger is not None and not self.ledger.startswith(("postgresql://", "postgres://")):
            raise TopologyError("the ledger needs a postgresql:// DSN")
        for account_id, shard in self.overrides.items():
            if shard not in self.shards:
                raise TopologyError(f"override for {account_id!r} names unknown shard {shard!r}")
        # Freeze the mappings so a shared Topology cannot change under a router.
        object.__setattr__(self, "shards", MappingProxyType(dict(self.shards)))
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @classmethod
    def even(cls, shards: Mapping[str, str], version: int = 1, ledger: str | None = None) -> Topology:
        """Contiguous, equal slot ranges over the shards in name order."""
        names = sorted(shards)
        assert names, "at least one shard is needed"
        slots = tuple(names[slot * len(names) // SLOT_COUNT] for slot in range(SLOT_COUNT))
        return cls(version=version, shards=shards, slots=slots, ledger=ledger)

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

    def with_shards(self, shards: Mapping[str, str], ledger: str | None = None) -> Topology:
        """The same placement with new addresses (e.g. a restarted local cluster), one version up."""
        assert set(shards) == set(self.shards), "with_shards changes addresses, not the shard set"
        return Topology(self.version + 1, shards, self.slots, self.overrides, ledger or self.ledger)

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
            **({"ledger": {"dsn": self.ledger}} if self.ledger else {}),
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
            return cls(
                version=_integer(document["version"], "version"),
                shards={str(name): str(spec["dsn"]) for name, spec in document["shards"].items()},
                slots=owners,
                overrides={str(k): str(v) for k, v in document.get("overrides", {}).items()},
                ledger=str(document["ledger"]["dsn"]) if document.get("ledger") else None,
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise TopologyError(f"malformed topology document: {error!r}") from error


def _integer(value: Any, name: str) -> int:
    """A JSON integer, exactly: no strings, fractions or booleans silently converted."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError(f"{name} must be an integer, got {value!r}")
    return value
