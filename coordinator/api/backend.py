"""What the HTTP layer asks of the service, as one interface with two implementations:

  LocalBackend   the service in this process (tests; `wallet serve --workers 0`)
  RemoteBackend  the engine process, over its link (api/engine_link.py): `wallet serve`
                 runs HTTP in processes of its own, so the engine's round trips never queue
                 behind HTTP parsing on one event loop (docs/figures.md)

Whatever must be one per service lives behind it, in the engine: the rate limits, the
in-flight ids, the metrics (HTTP processes send their observations to it). Token checks and
the owner cache stay with HTTP: they are the same in every process.

A request's rate-limit charge is paid before anything it asks of the service: the local
backend pays it at once; the remote one sends it with the request's first call to the engine
(one round trip, not two), or on its own when the request ends without one.
"""

from __future__ import annotations

import contextvars
from datetime import datetime
from typing import Protocol

from coordinator.api import push, schemas
from coordinator.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from coordinator.api.metrics import Metrics
from coordinator.api.rate_limits import RateLimiter
from coordinator.api.readiness import readiness
from coordinator.service.wallet import WalletService
from core.domain.accounts import Account
from core.domain.errors import WalletError
from core.domain.money import format_amount
from core.domain.transfers import Mode, Transfer, TransferResult
from core.runtime.settings import Settings
from ledger.service import LedgerService

# (token id, admin?): the charge a request owes its token's bucket.
Charge = tuple[str, bool]
# A request's unpaid charge: a list, so tasks a request starts (each with a copy of the
# context) pay it once between them.
UNPAID: contextvars.ContextVar[list[Charge] | None] = contextvars.ContextVar("unpaid_charge", default=None)
# (status, body, media type) of an answer made whole by the service (readiness, metrics).
Rendered = tuple[int, bytes, str]
MetricsContentType = METRICS_CONTENT_TYPE


class Backend(Protocol):
    default_mode: Mode

    async def begin(self, charge: Charge) -> None:
        """The request's charge: paid now, or with its first call (RateLimited if spent)."""

    async def end(self) -> None:
        """The request is answered: a charge not yet paid is paid now (RateLimited if spent)."""

    async def submit(self, transfer: Transfer) -> TransferResult: ...

    async def submit_many(self, transfers: list[Transfer]) -> list[TransferResult | WalletError]: ...

    async def get_account(self, account_id: str) -> Account: ...

    async def create_account(self, account_id: str, owner: str, currency: str) -> tuple[Account, bool]: ...

    async def transfer_state(self, transaction_id: str) -> tuple[int, dict[str, object]]: ...

    async def balance_at(self, account_id: str, at: datetime) -> schemas.BalanceAt: ...

    async def history(self, account_id: str, after_version: int, limit: int) -> schemas.History: ...

    async def ready(self) -> Rendered: ...

    async def metrics(self) -> Rendered: ...

    def observe_request(self, route: str, status: int, seconds: float) -> None: ...

    def observe_transfer(self, kind: str, mode: str, outcome: str, seconds: float) -> None: ...


class LocalBackend:
    """The service in this process."""

    def __init__(self, service: WalletService, settings: Settings, metrics: Metrics, heads: dict[str, str]) -> None:
        self.service = service
        self.default_mode = settings.default_mode
        self.metrics_registry = metrics
        self.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
        self.admin_limiter = RateLimiter(settings.admin_rate_per_s, settings.admin_rate_burst)
        self.heads = heads
        service.observe_batches(metrics.observe_batch)

    def charge(self, charge: Charge) -> None:
        token_id, admin = charge
        (self.admin_limiter if admin else self.limiter).take(token_id)

    async def begin(self, charge: Charge) -> None:
        self.charge(charge)

    async def end(self) -> None:
        return None

    async def submit(self, transfer: Transfer) -> TransferResult:
        return await self.service.submit(transfer)

    async def submit_many(self, transfers: list[Transfer]) -> list[TransferResult | WalletError]:
        return await self.service.submit_many(transfers)

    async def get_account(self, account_id: str) -> Account:
        return await self.service.get_account(account_id)

    async def create_account(self, account_id: str, owner: str, currency: str) -> tuple[Account, bool]:
        return await self.service.create_account(account_id, owner, currency)

    async def transfer_state(self, transaction_id: str) -> tuple[int, dict[str, object]]:
        return await push.transfer_state(self.service, transaction_id)

    async def balance_at(self, account_id: str, at: datetime) -> schemas.BalanceAt:
        """The account's balance at a past moment, rebuilt from the ledger."""
        account = await self.service.get_account(account_id)
        replay = await self._ledger().replay(at, account.account_id)
        found = replay.balances.get(account.account_id)
        balance, reserved, version = (found.balance, found.reserved, found.version) if found else (0, 0, 0)
        currency = account.currency
        return schemas.BalanceAt(
            account.account_id,
            currency,
            at.isoformat(),
            format_amount(balance, currency),
            format_amount(reserved, currency),
            format_amount(balance - reserved, currency),
            version,
        )

    async def history(self, account_id: str, after_version: int, limit: int) -> schemas.History:
        """A page of the account's history from the ledger (the read side), by version."""
        account = await self.service.get_account(account_id)
        events = await self._ledger().history(account.account_id, after_version, limit)
        items = [
            schemas.HistoryItem(
                e.version,
                str(e.transaction_id),
                e.kind,
                format_amount(e.amount, e.currency),
                format_amount(e.reserved_delta, e.currency),
                format_amount(e.balance_after, e.currency),
                e.created_at.isoformat(),
            )
            for e in events
        ]
        return schemas.History(account.account_id, items, events[-1].version if len(events) == limit else None)

    def _ledger(self) -> LedgerService:
        ledger = self.service.ledger
        if ledger is None:
            raise WalletError(
                "ledger_not_configured",
                "this deployment has no event ledger (the topology names "
                "none), so balances at a moment and history are not served",
            )
        return ledger

    async def ready(self) -> Rendered:
        return await readiness(self.service, self.heads)

    async def metrics(self) -> Rendered:
        await self.metrics_registry.refresh(self.service)
        return 200, self.metrics_registry.render(), METRICS_CONTENT_TYPE

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.metrics_registry.observe_request(route, status, seconds)

    def observe_transfer(self, kind: str, mode: str, outcome: str, seconds: float) -> None:
        self.metrics_registry.observe_transfer(kind, mode, outcome, seconds)
