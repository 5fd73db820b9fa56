"""The account routes: open, read (with an ETag), and the ledger's read side (the balance at a
moment, the history)."""
from __future__ import annotations

import base64
import hashlib

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api import schemas
from coordinator.api.access import require_owner, service_of
from coordinator.api.bodies import path, query, read_body
from coordinator.api.views import JSON, account_view, json_response
from coordinator.domain.errors import WalletError
from coordinator.domain.money import format_amount
from coordinator.domain.validation import check_moment
from ledger.service import LedgerService


async def create_account(request: Request) -> Response:
    body = await read_body(request, schemas.NewAccount)
    account, created = await service_of(request).create_account(body.account_id, body.owner, body.currency)
    headers = {"Location": f"/v1/accounts/{account.account_id}"} if created else None
    return json_response(account_view(account), 201 if created else 200, headers)


async def get_account(request: Request) -> Response:
    """The account, with a strong ETag of its representation: If-None-Match with it is a 304."""
    account_id = path(request, schemas.AccountPath).account_id
    await require_owner(request, account_id, "read")
    encoded = msgspec.json.encode(account_view(await service_of(request).get_account(account_id)))
    tag = '"' + base64.urlsafe_b64encode(hashlib.sha256(encoded).digest()[:18]).decode() + '"'
    if tag in (candidate.strip() for candidate in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(encoded, media_type=JSON, headers={"ETag": tag})


def ledger_of(request: Request) -> LedgerService:
    ledger = service_of(request).ledger
    if ledger is None:
        raise WalletError("ledger_not_configured", "this deployment has no event ledger (the topology names "
                                                   "none), so balances at a moment and history are not served")
    return ledger


async def get_balance_at(request: Request) -> Response:
    """The account's balance at a past moment, rebuilt from the ledger."""
    account_id = path(request, schemas.AccountPath).account_id
    at = check_moment(query(request, schemas.BalanceQuery).at)
    await require_owner(request, account_id, "read")
    account = await service_of(request).get_account(account_id)
    replay = await ledger_of(request).replay(at, account.account_id)
    found = replay.balances.get(account.account_id)
    balance, reserved, version = (found.balance, found.reserved, found.version) if found else (0, 0, 0)
    currency = account.currency
    return json_response(schemas.BalanceAt(account.account_id, currency, at.isoformat(),
                                           format_amount(balance, currency), format_amount(reserved, currency),
                                           format_amount(balance - reserved, currency), version))


async def get_history(request: Request) -> Response:
    """An account's history from the ledger (the read side), a page at a time by version."""
    account_id = path(request, schemas.AccountPath).account_id
    page = query(request, schemas.HistoryQuery)
    await require_owner(request, account_id, "read")
    account = await service_of(request).get_account(account_id)
    events = await ledger_of(request).history(account.account_id, page.after_version, page.limit)
    items = [schemas.HistoryItem(e.version, str(e.transaction_id), e.kind, format_amount(e.amount, e.currency),
                                 format_amount(e.reserved_delta, e.currency), format_amount(e.balance_after, e.currency),
                                 e.created_at.isoformat()) for e in events]
    next_version = events[-1].version if len(events) == page.limit else None
    return json_response(schemas.History(account.account_id, items, next_version))
