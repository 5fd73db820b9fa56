"""Where a transfer stands: its record (on whichever shard holds it), or, while it has none,
the step it has reached (TC/C and Saga phase state, a prepared 2PC branch, a batch still open
in this process)."""

from __future__ import annotations

from coordinator.service.inflight import InFlight
from coordinator.service.record_lookup import RecordLookups
from coordinator.service.routing import Router
from core.domain.errors import WalletError
from core.domain.transfers import TransferResult
from core.runtime.fan_out import fan_out
from shards.contract import Shards
from shards.errors import ShardUnavailable
from shards.phase_state import PhaseRow


class TransferStatus:
    def __init__(self, router: Router, shards: Shards, records: RecordLookups, inflight: InFlight) -> None:
        self.router = router
        self.shards = shards
        self.records = records
        self.inflight = inflight

    async def recorded(self, transaction_id: str) -> TransferResult:
        try:
            found = await self.records.find([transaction_id])
        except ShardUnavailable as error:
            raise WalletError("shard_unavailable", f"shard {error.shard} did not answer; retry") from error
        if transaction_id not in found:
            raise WalletError("transfer_not_found", f"no transfer with transaction_id {transaction_id}")
        return found[transaction_id]

    async def progress(self, transaction_id: str) -> str | None:
        """The phase of a TC/C or Saga transfer that has started but has no record yet."""

        async def one(shard: str) -> dict[str, PhaseRow]:
            async with self.shards.session(shard) as session:
                return await session.select_phases([transaction_id])

        found = await fan_out(self.router.shards(), one)
        found.raise_first()
        for phases in found.results.values():
            phase = phases.get(transaction_id)
            if phase is not None:
                if phase.second_phase is None:
                    return "trying" if phase.transfer.mode == "tcc" else "debited"
                return "confirming" if phase.second_phase == "confirm" else "cancelling"
        return None

    async def in_doubt(self, transaction_id: str) -> bool:
        """True if a prepared (or still open) branch on some shard holds the transfer's record:
        its coordinator is between PREPARE and COMMIT PREPARED, or died there."""

        async def one(shard: str) -> bool:
            async with self.shards.session(shard) as session:
                return await session.record_is_held(transaction_id)

        held = await fan_out(self.router.shards(), one)
        held.raise_first()
        return any(held.results.values())

    def in_flight(self, transaction_id: str) -> bool:
        """True while this process is still working on the transaction id (not yet recorded)."""
        return transaction_id in self.inflight
