"""Structured logs: one JSON object a line, carrying the transaction id of the request
being served (a context variable, so every line logged while serving it has it) and, with
tracing on, the trace and span ids of the span current where the line was written."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from core.runtime import tracing

transaction_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("transaction_id", default=None)
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# LogRecord attributes that are not the caller's `extra` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def bind_transaction(transaction_id: object) -> None:
    """Every later log line of this request carries the id (as given; validation comes later)."""
    if isinstance(transaction_id, str) and len(transaction_id) <= 64:
        transaction_id_var.set(transaction_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        transaction_id = transaction_id_var.get()
        if transaction_id is not None:
            entry["transaction_id"] = transaction_id
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if tracing.enabled and (ids := tracing.log_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "json", level: str = "info") -> None:
    """The `wallet.*` loggers to stderr, as JSON lines (or plain text for a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("wallet")
    root.handlers = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def log_phase(logger: logging.Logger, phase: str, transaction_ids: list[Any], **fields: Any) -> None:
    """One line per batch step, naming every transaction id in it (at DEBUG: a line per
    step per batch would cost throughput at INFO; WALLET_LOG_LEVEL=debug shows them)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s", phase, extra={"phase": phase, "transaction_ids": [str(t) for t in transaction_ids], **fields}
        )
