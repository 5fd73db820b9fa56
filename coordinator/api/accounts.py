"""The account routes: open, read, and the ledger's read side (balance at a moment, history)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coordinator.api.access import require_owner, service_of
from coordinator.api.bodies import query_integer, read_body
from coordinator.domain.errors import WalletError
from coordinator.domain.money import format_amount
from coordinator.domain.validation import check_moment
from ledger.service import LedgerService
from ledger.store import PAGE_SIZE_MAX


async def create_account(request: Request) -> Response:
    body = await read_body(request, {"account_id", "owner", "currency"})
    account, created = await service_of(request).create_account(body["account_id"], body["owner"], body["currency"])
    return JSONResponse(account.to_json(), status_code=201 if created else 200)

async def show_account(request: Request) -> Response:
    await require_owner(request, request.path_params["account_id"], "read")
    account = await service_of(request).get_account(request.path_params["account_id"])
    return JSONResponse(account.to_json())

HISTORY_PAGE_DEFAULT = 100

def ledger_of(request: Request) -> LedgerService:
    ledger = service_of(request).ledger
    if ledger is None:
        raise WalletError("ledger_not_configured", "this deployment has no event ledger (the topology names "
                                                   "none), so balances at a moment and history are not served")
    return ledger

async def balance_at(request: Request) -> Response:
    """The account's balance at a past moment, rebuilt from the ledger."""
    await require_owner(request, request.path_params["account_id"], "read")
    account = await service_of(request).get_account(request.path_params["account_id"])
    at = check_moment(request.query_params.get("at"))
    replay = await ledger_of(request).replay(at, account.account_id)
    found = replay.balances.get(account.account_id)
    balance, reserved, version = (found.balance, found.reserved, found.version) if found else (0, 0, 0)
    return JSONResponse({
        "account_id": account.account_id, "currency": account.currency, "at": at.isoformat(),
        "balance": format_amount(balance, account.currency), "reserved": format_amount(reserved, account.currency),
        "available": format_amount(balance - reserved, account.currency), "version": version,
    })

async def account_transactions(request: Request) -> Response:
    """An account's history from the ledger (the read side), a page at a time by version."""
    await require_owner(request, request.path_params["account_id"], "read")
    account = await service_of(request).get_account(request.path_params["account_id"])
    after = query_integer(request, "after_version", 0, 0, 2**62)
    limit = query_integer(request, "limit", HISTORY_PAGE_DEFAULT, 1, PAGE_SIZE_MAX)
    events = await ledger_of(request).history(account.account_id, after, limit)
    items = [{
        "version": e.version, "transaction_id": str(e.transaction_id), "kind": e.kind,
        "amount": format_amount(e.amount, e.currency), "reserved_change": format_amount(e.reserved_delta, e.currency),
        "balance_after": format_amount(e.balance_after, e.currency), "at": e.created_at.isoformat(),
    } for e in events]
    next_version = events[-1].version if len(events) == limit else None
    return JSONResponse({"account_id": account.account_id, "items": items, "next_after_version": next_version})
