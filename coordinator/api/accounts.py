"""The account routes: open, read (with an ETag), and the ledger's read side (the balance at a
moment, the history)."""

from __future__ import annotations

import base64
import hashlib

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api import schemas
from coordinator.api.access import backend_of, require_owner
from coordinator.api.bodies import path, query, read_body
from coordinator.api.views import JSON, account_view, json_response
from core.domain.validation import check_account_id, check_moment, check_owner


async def create_account(request: Request) -> Response:
    body = await read_body(request, schemas.NewAccount)
    account, created = await backend_of(request).create_account(
        check_account_id(body.account_id), check_owner(body.owner), body.currency
    )
    headers = {"Location": f"/v1/accounts/{account.account_id}"} if created else None
    return json_response(account_view(account), 201 if created else 200, headers)


async def get_account(request: Request) -> Response:
    """The account, with a strong ETag of its representation: If-None-Match with it is a 304."""
    account_id = path(request, schemas.AccountPath).account_id
    await require_owner(request, account_id, "read")
    encoded = msgspec.json.encode(account_view(await backend_of(request).get_account(check_account_id(account_id))))
    tag = '"' + base64.urlsafe_b64encode(hashlib.sha256(encoded).digest()[:18]).decode() + '"'
    if tag in (candidate.strip() for candidate in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(encoded, media_type=JSON, headers={"ETag": tag})


async def get_balance_at(request: Request) -> Response:
    """The account's balance at a past moment, rebuilt from the ledger."""
    account_id = check_account_id(path(request, schemas.AccountPath).account_id)
    at = check_moment(query(request, schemas.BalanceQuery).at)
    await require_owner(request, account_id, "read")
    return json_response(await backend_of(request).balance_at(account_id, at))


async def get_history(request: Request) -> Response:
    """An account's history from the ledger (the read side), a page at a time by version."""
    account_id = check_account_id(path(request, schemas.AccountPath).account_id)
    page = query(request, schemas.HistoryQuery)
    await require_owner(request, account_id, "read")
    return json_response(await backend_of(request).history(account_id, page.after_version, page.limit))
