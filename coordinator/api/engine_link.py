"""The link between an HTTP process and the engine: `wallet serve` runs HTTP in processes of
their own, and every call they make of the service travels here, over a socket pair the
engine made for each of them.

  RemoteBackend  (in an HTTP process) the Backend of api/backend.py: each call is a message;
                 the calls of one turn of the event loop leave in one write
  EngineServer   (in the engine) runs each call on its LocalBackend and answers, the answers
                 of one turn of the loop in one write

A frame is a 4-byte length and a MessagePack list of messages (msgspec). A call is
[id, method, charge, arguments, traceparent]; an answer [id, true, value] or [id, false,
failure]. The traceparent (tracing on: runtime/tracing.py) is the HTTP request's span, which
the call runs under in the engine, so the round that applies a transfer links its request. An HTTP process's
metric observations ride along as the call `observe`, which is not answered. Every bound is
a named constant: frame size, calls outstanding, observations held.

Money never crosses as a float: transfers and results are the domain's tuples (integer minor
units), encoded as MessagePack arrays.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec

from coordinator.api import schemas
from coordinator.api.backend import UNPAID, Charge, LocalBackend, Rendered
from coordinator.api.rate_limits import RateLimited
from core.domain.accounts import Account
from core.domain.errors import ERROR_STATUS, ErrorCode, HttpCode, WalletError
from core.domain.transfers import Mode, Transfer, TransferResult
from core.runtime import tracing
from shards.errors import ShardError

log = logging.getLogger("wallet.engine_link")

FRAME_BYTES_MAX = 64 * 1024 * 1024  # a batch call of 1,000 transfers is ~200 KiB
CALLS_OUTSTANDING_MAX = 100_000  # per HTTP process, as many as the engine holds in flight
OBSERVATIONS_HELD_MAX = 100_000  # metric observations waiting for the next frame
OBSERVE_EVERY_S = 0.25  # observations leave at least this often, with or without calls
_HEADER = struct.Struct("!I")


class Failure(msgspec.Struct, tag=True):
    """Why a call has no value: a refusal the client can act on, a shard that did not answer,
    or a failure of the engine's own."""

    kind: Literal["wallet", "rate_limited", "shard", "internal"]
    code: ErrorCode | HttpCode
    detail: str
    retry_after_s: float = 0.0
    shard: str = ""


# ("transfer", kind, mode, outcome, seconds) of a transfer answered, or ("request", route,
# status, "", seconds) of a request
Observation = tuple[str, str, str, str, float]
Call = tuple[int, str, Charge | None, msgspec.Raw, str | None]  # the last: the caller's traceparent
Answer = tuple[int, bool, msgspec.Raw]
Item = TransferResult | Failure  # one transfer's answer in a batch call


def failure_of(error: BaseException) -> Failure:
    if isinstance(error, RateLimited):
        return Failure("rate_limited", error.code, error.detail, retry_after_s=error.retry_after_s)
    if isinstance(error, WalletError):
        return Failure("wallet", error.code, error.detail)
    if isinstance(error, ShardError):
        return Failure("shard", "shard_unavailable", str(error), shard=error.shard)
    return Failure("internal", "internal_error", repr(error))


def error_of(failure: Failure) -> Exception:
    if failure.kind == "rate_limited":
        return RateLimited(failure.retry_after_s)
    if failure.kind == "wallet" and failure.code in ERROR_STATUS:
        return WalletError(failure.code, failure.detail)
    if failure.kind == "shard":
        return ShardError(failure.shard, failure.detail)
    return RuntimeError(f"the engine failed: {failure.detail}")


def error_of_item(failure: Failure) -> WalletError:
    """One transfer's refusal in a batch call: always the caller's to read (never raised)."""
    error = error_of(failure)
    return error if isinstance(error, WalletError) else WalletError("shard_unavailable", failure.detail)


# method -> (its arguments' type, its value's type), both sides of the link.
METHODS: dict[str, tuple[Any, Any]] = {
    "hello": (tuple[()], None),  # an HTTP process is serving
    "charge": (tuple[()], None),
    "submit": (tuple[Transfer], TransferResult),
    "submit_many": (tuple[list[Transfer]], list[Item]),
    "get_account": (tuple[str], Account),
    "create_account": (tuple[str, str, str], tuple[Account, bool]),
    "transfer_state": (tuple[str], tuple[int, dict[str, Any]]),
    "balance_at": (tuple[str, datetime], schemas.BalanceAt),
    "history": (tuple[str, int, int], schemas.History),
    "ready": (tuple[()], tuple[int, bytes, str]),
    "metrics": (tuple[()], tuple[int, bytes, str]),
    "observe": (tuple[list[Observation]], None),
}
_ARGUMENTS = {name: msgspec.msgpack.Decoder(types[0]) for name, types in METHODS.items()}
_VALUES = {name: msgspec.msgpack.Decoder(types[1]) for name, types in METHODS.items()}
_FAILURE = msgspec.msgpack.Decoder(Failure)
_CALLS = msgspec.msgpack.Decoder(list[Call])
_ANSWERS = msgspec.msgpack.Decoder(list[Answer])


class Framed:
    """Frames out (buffered for one turn of the loop) and in, on one stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = msgspec.msgpack.Encoder()
        self.outgoing: list[Any] = []

    def send(self, message: Any) -> None:
        self.outgoing.append(message)
        if len(self.outgoing) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if not self.outgoing or self.writer.is_closing():
            self.outgoing = []
            return
        payload = self.encoder.encode(self.outgoing)
        self.outgoing = []
        assert len(payload) <= FRAME_BYTES_MAX, "a frame within its bound"
        self.writer.write(_HEADER.pack(len(payload)) + payload)

    async def receive(self) -> bytes | None:
        """The next frame's payload; None once the other side has closed."""
        try:
            (size,) = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
            if size > FRAME_BYTES_MAX:
                raise ConnectionError(f"a frame of {size} bytes is over the bound of {FRAME_BYTES_MAX}")
            return await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return None


async def framed(sock: socket.socket) -> Framed:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    return Framed(reader, writer)


class EngineServer:
    """Answers one HTTP process's calls with `backend`, until that process goes away."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.links: set[asyncio.Task[None]] = set()
        self.serving = 0  # HTTP processes that said hello
        self.hello = asyncio.Condition()
        handlers: dict[str, Callable[..., Any]] = {
            "hello": self._hello,
            "charge": self._nothing,
            "submit": backend.submit,
            "submit_many": self._submit_many,
            "get_account": backend.get_account,
            "create_account": backend.create_account,
            "transfer_state": backend.transfer_state,
            "balance_at": backend.balance_at,
            "history": backend.history,
            "ready": backend.ready,
            "metrics": backend.metrics,
        }
        assert set(handlers) | {"observe"} == set(METHODS), "every method of the link is served"
        self.handlers = handlers

    def attach(self, sock: socket.socket) -> asyncio.Task[None]:
        task = asyncio.create_task(self._serve(sock), name="engine-link")
        self.links.add(task)
        task.add_done_callback(self.links.discard)
        return task

    async def close(self) -> None:
        for task in list(self.links):
            task.cancel()
        await asyncio.gather(*self.links, return_exceptions=True)

    async def _nothing(self) -> None:
        return None

    async def _hello(self) -> None:
        async with self.hello:
            self.serving += 1
            self.hello.notify_all()

    async def wait_serving(self, processes: int) -> None:
        async with self.hello:
            await self.hello.wait_for(lambda: self.serving >= processes)

    async def _submit_many(self, transfers: list[Transfer]) -> list[Item]:
        return [
            failure_of(answer) if isinstance(answer, WalletError) else answer
            for answer in await self.backend.submit_many(transfers)
        ]

    async def _serve(self, sock: socket.socket) -> None:
        link = await framed(sock)
        running: set[asyncio.Task[None]] = set()
        try:
            while (payload := await link.receive()) is not None:
                for call_id, method, charge, arguments, traceparent in _CALLS.decode(payload):
                    if method == "observe":
                        self._observe(_ARGUMENTS[method].decode(arguments)[0])
                        continue
                    task = asyncio.create_task(self._answer(link, call_id, method, charge, arguments, traceparent))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            link.writer.close()

    async def _answer(
        self,
        link: Framed,
        call_id: int,
        method: str,
        charge: Charge | None,
        arguments: msgspec.Raw,
        traceparent: str | None,
    ) -> None:
        try:
            if charge is not None:
                self.backend.charge(charge)
            with tracing.remote_parent(traceparent) if traceparent and tracing.enabled else tracing.NULL:
                value = await self.handlers[method](*_ARGUMENTS[method].decode(arguments))
        except Exception as error:  # every failure is the caller's answer
            if not isinstance(error, (WalletError, ShardError)):
                log.exception("engine call %s failed", method)
            link.send((call_id, False, msgspec.Raw(msgspec.msgpack.encode(failure_of(error)))))
            return
        link.send((call_id, True, msgspec.Raw(msgspec.msgpack.encode(value))))

    def _observe(self, observations: list[Observation]) -> None:
        backend = self.backend
        for what, first, second, third, seconds in observations:
            if what == "transfer":
                backend.observe_transfer(first, second, third, seconds)
            elif second.isdigit():
                backend.observe_request(first, int(second), seconds)


class RemoteBackend:
    """The engine, as this HTTP process's Backend."""

    def __init__(self, sock: socket.socket, default_mode: Mode) -> None:
        self.sock = sock
        self.default_mode = default_mode
        self.link: Framed | None = None
        self.calls: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self.last_id = 0
        self.observations: list[Observation] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.on_lost: Callable[[], None] = lambda: None  # the engine went away

    async def open(self) -> RemoteBackend:
        self.link = await framed(self.sock)
        self.tasks = [
            asyncio.create_task(self._read(), name="engine-link-read"),
            asyncio.create_task(self._send_observations(), name="engine-link-observe"),
        ]
        return self

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.link is not None:
            self.link.flush()
            self.link.writer.close()

    async def _call(self, method: str, *arguments: Any) -> Any:
        link = self.link
        assert link is not None, "RemoteBackend.open() first"
        if len(self.calls) >= CALLS_OUTSTANDING_MAX:
            raise WalletError(
                "overloaded",
                f"this HTTP process has {CALLS_OUTSTANDING_MAX} calls waiting on the "
                "engine; retry shortly with the same transaction_id",
            )
        unpaid = UNPAID.get()
        charge = unpaid.pop() if unpaid else None
        self.last_id += 1
        call_id = self.last_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls[call_id] = (method, future)
        traceparent = tracing.traceparent_here() if tracing.enabled else None
        link.send((call_id, method, charge, msgspec.Raw(msgspec.msgpack.encode(arguments)), traceparent))
        value = await future
        if isinstance(value, Failure):
            raise error_of(value)
        return value

    async def _read(self) -> None:
        assert self.link is not None
        try:
            while (payload := await self.link.receive()) is not None:
                for call_id, ok, raw in _ANSWERS.decode(payload):
                    found = self.calls.pop(call_id, None)
                    if found is not None and not found[1].done():
                        method, future = found
                        future.set_result(_VALUES[method].decode(raw) if ok else _FAILURE.decode(raw))
        finally:
            lost = WalletError(
                "shard_unavailable",
                "the engine process went away; the outcome is unknown until you retry with the same transaction_id",
            )
            for _, future in self.calls.values():
                if not future.done():
                    future.set_exception(lost)
            self.calls.clear()
            self.on_lost()

    async def _send_observations(self) -> None:
        while True:
            await asyncio.sleep(OBSERVE_EVERY_S)
            self._flush_observations()

    def _flush_observations(self) -> None:
        if self.observations and self.link is not None:
            observations, self.observations = self.observations, []
            self.link.send((0, "observe", None, msgspec.Raw(msgspec.msgpack.encode((observations,))), None))

    def _observed(self, observation: Observation) -> None:
        if len(self.observations) < OBSERVATIONS_HELD_MAX:  # bounded: past it, observations are dropped
            self.observations.append(observation)

    async def hello(self) -> None:
        await self._call("hello")

    # -- Backend ------------------------------------------------------------------------
    async def begin(self, charge: Charge) -> None:
        UNPAID.set([charge])

    async def end(self) -> None:
        unpaid = UNPAID.get()
        if unpaid:
            await self._call("charge")

    async def submit(self, transfer: Transfer) -> TransferResult:
        result: TransferResult = await self._call("submit", transfer)
        return result

    async def submit_many(self, transfers: list[Transfer]) -> list[TransferResult | WalletError]:
        items: list[Item] = await self._call("submit_many", transfers)
        return [error_of_item(item) if isinstance(item, Failure) else item for item in items]

    async def get_account(self, account_id: str) -> Account:
        account: Account = await self._call("get_account", account_id)
        return account

    async def create_account(self, account_id: str, owner: str, currency: str) -> tuple[Account, bool]:
        created: tuple[Account, bool] = await self._call("create_account", account_id, owner, currency)
        return created

    async def transfer_state(self, transaction_id: str) -> tuple[int, dict[str, object]]:
        state: tuple[int, dict[str, object]] = await self._call("transfer_state", transaction_id)
        return state

    async def balance_at(self, account_id: str, at: datetime) -> schemas.BalanceAt:
        found: schemas.BalanceAt = await self._call("balance_at", account_id, at)
        return found

    async def history(self, account_id: str, after_version: int, limit: int) -> schemas.History:
        page: schemas.History = await self._call("history", account_id, after_version, limit)
        return page

    async def ready(self) -> Rendered:
        rendered: Rendered = await self._call("ready")
        return rendered

    async def metrics(self) -> Rendered:
        self._flush_observations()  # what this process saw so far, before the engine renders
        rendered: Rendered = await self._call("metrics")
        return rendered

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self._observed(("request", route, str(status), "", seconds))

    def observe_transfer(self, kind: str, mode: str, outcome: str, seconds: float) -> None:
        self._observed(("transfer", kind, mode, outcome, seconds))
