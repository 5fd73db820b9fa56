"""Domain values as the API shows them (the response schemas of api/schemas.py): amounts as
decimal strings in the currency's precision, ids as text, times in RFC 3339."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET
from starlette.responses import Response

from coordinator.api import schemas
from core.domain.accounts import Account
from core.domain.money import format_amount
from core.domain.transfers import TransferResult

JSON = "application/json"


def account_view(account: Account) -> schemas.Account:
    currency = account.currency
    return schemas.Account(
        account.account_id,
        account.owner,
        currency,
        format_amount(account.balance, currency),
        format_amount(account.available, currency),
        format_amount(account.reserved, currency),
        account.status,
    )


def transfer_view(result: TransferResult) -> schemas.Transfer:
    transfer = result.transfer
    return schemas.Transfer(
        status=result.status,
        transaction_id=str(transfer.transaction_id),
        kind=transfer.kind,
        from_account=transfer.from_account,
        to_account=transfer.to_account,
        amount=format_amount(transfer.amount, transfer.currency),
        currency=transfer.currency,
        mode=transfer.mode,
        protocol=result.protocol,
        phase=result.phase,
        error_code=UNSET if result.error_code is None else result.error_code,
        created_at=UNSET if result.created_at is None else result.created_at.isoformat(),
    )


def plain(value: Any) -> Any:
    """A view as JSON-ready builtins (the CLI prints these; push events send them)."""
    return msgspec.to_builtins(value)


def json_response(value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(value), status_code=status_code, media_type=JSON, headers=headers)
