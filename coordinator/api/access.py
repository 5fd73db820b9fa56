"""Who may do what: the bearer token checked (401), its rate limit spent (429), its scope and
owner checked (403), every request counted. Someone else's account and no account get the
same answer, so nothing tells whether another person's account exists."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api.auth import OwnerCache, Principal
from coordinator.api.backend import Backend
from coordinator.api.problems import shard_error_response, wallet_error_response
from core.domain.errors import WalletError
from core.domain.transfers import Transfer
from core.domain.validation import check_account_id
from core.runtime import logs
from shards.errors import ShardError


def backend_of(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


async def owner_of(state: State, account_id: str) -> str | None:
    """The account's owner (cached: owners never change), or None if there is no such account."""
    owners: OwnerCache = state.owners
    owner = owners.get(account_id)
    if owner is None:
        try:
            owner = (await state.backend.get_account(account_id)).owner
        except WalletError as error:
            if error.code != "account_not_found":
                raise
            return None
        owners.put(account_id, owner)
    return owner


async def require_owner(request: Request, account_id: object, action: str, field: str = "account_id") -> None:
    """A user token acts only on its own accounts. Someone else's account and no account
    get the same answer, so nothing tells whether another person's account exists."""
    principal = principal_of(request)
    if principal.is_admin:
        return
    checked = check_account_id(account_id, field)
    if await owner_of(request.app.state, checked) != principal.owner:
        raise WalletError("forbidden", f"this token may not {action} account {checked}")


async def may_see_transfer(request: Request, body: dict[str, object]) -> bool:
    principal = principal_of(request)
    if principal.is_admin or body.get("status") == "pending":
        return True  # pending shows no accounts or amounts, only that the id is in use
    for account in (body.get("from_account"), body.get("to_account")):
        if isinstance(account, str) and await owner_of(request.app.state, account) == principal.owner:
            return True
    return False


async def owned_item(request: Request, item: Transfer | WalletError) -> Transfer | WalletError:
    """A user's batch item moving money out of an account it does not own fails alone."""
    if isinstance(item, WalletError):
        return item
    try:
        await require_owner(request, item.from_account, "move money out of", "from_account")
    except WalletError as error:
        if error.code == "forbidden":
            return error
    return item  # other bad input is the service's to name


def guarded(
    request_handler: Callable[[Request], Awaitable[Response]], route: str, admin: bool = False, public: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate (401), charge the token's rate limit (429), check the scope (403), count."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        logs.transaction_id_var.set(None)
        logs.request_id_var.set(request.headers.get("x-request-id", "")[:64] or os.urandom(16).hex())
        backend: Backend = request.app.state.backend
        try:
            if not public:
                principal = request.app.state.verifier.verify(request.headers.get("authorization"))
                request.state.principal = principal
                await backend.begin((principal.token_id, principal.is_admin))
                if admin and not principal.is_admin:
                    raise WalletError("forbidden", "this needs an admin token")
            response = await request_handler(request)
        except WalletError as error:
            response = wallet_error_response(error)
        except ShardError as error:
            response = shard_error_response(request, error)
        if not public:
            try:
                await backend.end()  # a request that asked the service nothing pays its charge now
            except WalletError as error:
                response = wallet_error_response(error)
        backend.observe_request(route, response.status_code, time.perf_counter() - started)
        return response

    return endpoint
