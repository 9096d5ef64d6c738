"""The asyncio client: ``AsyncSessionsClient``, the twin of ``SessionsClient`` with awaitable methods."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import httpx

from session_client._core import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_TIMEOUT,
    Call,
    Cursor,
    Reconnect,
    Retries,
    RetryableStatus,
    SSEDecoder,
    channel_path,
    comma_list,
    new_part_id,
    response_of,
    run_id_of,
    run_path,
    session_path,
    should_retry_error,
    should_retry_response,
)
from session_client._errors import (
    APIConnectionError,
    RunFinalError,
    SessionsError,
    connection_error,
    status_error,
)
from session_client._models import (
    ControlRecord,
    CreatedSession,
    DataRecord,
    Headers,
    Io,
    Record,
    Run,
    Session,
    created_from_wire,
    record_from_page,
    run_from_wire,
    session_from_wire,
)
from session_client._requests import append_call, create_call, update_call, write_call

__all__ = ["AsyncChannel", "AsyncRuns", "AsyncSessions", "AsyncSessionsClient"]


class AsyncSessionsClient:
    """The asyncio twin of ``SessionsClient``: same resources, same behaviour, awaitable methods.

    ``sessions.list``, ``channel.records`` and ``channel.subscribe`` are async iterators.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: Retries | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retries = retries or Retries()
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self.sessions = AsyncSessions(self)
        self.runs = AsyncRuns(self)

    @property
    def run_id(self) -> str | None:
        """The run this client's token belongs to, when it is a run token."""
        return run_id_of(self.token)

    def channel(self, ref: str, io: Io) -> AsyncChannel:
        channel_path(ref, io)  # checks io
        return AsyncChannel(self, ref, io)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncSessionsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying what the policy allows; return a 2xx response or raise."""
        retry = 0
        while True:
            try:
                response = await self._http.send(call.build(self._http, self.base_url, self.token))
            except httpx.TransportError as error:
                if retry < self.retries.max_retries and should_retry_error(error, call):
                    await asyncio.sleep(self.retries.delay(retry))
                    retry += 1
                    continue
                raise connection_error(error) from error
            if response.is_success:
                return response
            if retry < self.retries.max_retries and should_retry_response(response, call):
                await asyncio.sleep(self.retries.delay(retry, response))
                retry += 1
                continue
            raise status_error(response)

    async def json(self, call: Call) -> Any:
        return (await self.request(call)).json()


class AsyncSessions:
    """``client.sessions``: create, retrieve, update, close and list sessions."""

    def __init__(self, client: AsyncSessionsClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        type: str,
        task_identifier: str,
        trigger_config: dict[str, Any] | None = None,
        external_id: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
    ) -> CreatedSession:
        call = create_call(type, task_identifier, trigger_config, external_id, tags, metadata, expires_at)
        return created_from_wire(await self._client.json(call))

    async def retrieve(self, ref: str) -> Session:
        return session_from_wire(await self._client.json(Call("GET", session_path(ref))))

    async def update(
        self, ref: str, *, tags: Sequence[str] | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        return session_from_wire(await self._client.json(update_call(ref, tags, metadata)))

    async def close(self, ref: str, reason: str | None = None) -> Session:
        body = {} if reason is None else {"reason": reason}
        call = Call("POST", session_path(ref) + "/close", json=body)
        return session_from_wire(await self._client.json(call))

    async def list(
        self,
        *,
        type: str | Sequence[str] | None = None,
        tag: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        task_identifier: str | Sequence[str] | None = None,
        external_id: str | Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Session]:
        filters = {
            "filter[type]": comma_list(type),
            "filter[tags]": comma_list(tag),
            "filter[status]": comma_list(status),
            "filter[taskIdentifier]": comma_list(task_identifier),
            "filter[externalId]": comma_list(external_id),
            "page[size]": None if page_size is None else str(page_size),
        }
        params = {name: value for name, value in filters.items() if value is not None}
        while True:
            page = await self._client.json(Call("GET", "/api/v1/sessions", params=params))
            for item in page["data"]:
                yield session_from_wire(item)
            after = (page.get("pagination") or {}).get("next")
            if not after or not page["data"]:
                return
            params = {**params, "page[after]": after}


class AsyncRuns:
    """``client.runs``: a run's status, and the agent's heartbeat, completion and failure."""

    def __init__(self, client: AsyncSessionsClient) -> None:
        self._client = client

    async def retrieve(self, run_id: str) -> Run:
        return run_from_wire(await self._client.json(Call("GET", run_path(run_id))))

    async def heartbeat(self, run_id: str) -> Run:
        call = Call("POST", run_path(run_id) + "/heartbeat", json={})
        run = run_from_wire(await self._client.json(call))
        if run.token and self._client.run_id == run_id:
            self._client.token = run.token
        return run

    async def complete(self, run_id: str, output: Any = None) -> Run:
        body = {} if output is None else {"output": output}
        return run_from_wire(await self._client.json(Call("POST", run_path(run_id) + "/complete", json=body)))

    async def fail(self, run_id: str, error: Any) -> Run:
        call = Call("POST", run_path(run_id) + "/fail", json={"error": error})
        return run_from_wire(await self._client.json(call))

    async def list(self, session_ref: str) -> list[Run]:
        body = await self._client.json(Call("GET", session_path(session_ref) + "/runs"))
        return [run_from_wire(item) for item in body["data"]]


class AsyncChannel:
    """A session's ``.in`` or ``.out``: append to it, read what it holds, or follow it live."""

    def __init__(self, client: AsyncSessionsClient, ref: str, io: Io) -> None:
        self._client = client
        self.ref = ref
        self.io = io
        self._path = channel_path(ref, io)

    async def append(self, data: Any, part_id: str | None = None, headers: Headers | None = None) -> int:
        call, from_batch = append_call(self._path, data, part_id or new_part_id(), headers)
        body = await self._client.json(call)
        return int(body["seqNums"][0] if from_batch else body["seq"])

    async def write(
        self,
        records: Sequence[DataRecord | ControlRecord],
        *,
        trim_before: int | None = None,
        part_id: str | None = None,
    ) -> list[int]:
        call = write_call(self._path, records, trim_before, part_id or new_part_id())
        body = await self._client.json(call)
        return [int(seq) for seq in body["seqNums"]]

    async def records(self, after: int | None = None) -> AsyncIterator[Record]:
        while True:
            params = None if after is None else {"afterEventId": str(after)}
            page = (await self._client.json(Call("GET", self._path + "/records", params=params)))["records"]
            if not page:
                return
            for item in page:
                record = record_from_page(item)
                after = record.seq_num
                yield record

    async def subscribe(self, after: int | None = None, *, reconnects: int = 20) -> AsyncIterator[Record]:
        """As ``Channel.subscribe``; the heartbeat runs as an asyncio task."""
        cursor = Cursor(after)
        heart = _AsyncHeartbeat(self._client.runs, self._client.run_id) if self._client.run_id else None
        try:
            failures = 0
            while not cursor.closed:
                if heart is not None and heart.final is not None:
                    raise heart.final
                live = self._read_live(cursor)
                delivered = False
                try:
                    async for record in live:
                        failures, delivered = 0, True
                        if heart is not None and heart.final is not None:
                            raise heart.final  # a run that lost its lease hands nothing more over
                        yield record
                    failures = 0
                    if not delivered:  # a read that ended empty: the long poll's end, or a proxy's
                        await asyncio.sleep(self._client.retries.reconnect_delay(0))
                except (httpx.TransportError, Reconnect, RetryableStatus) as error:
                    if failures >= reconnects:
                        if isinstance(error, httpx.TransportError):
                            raise connection_error(error) from error
                        if isinstance(error, RetryableStatus):
                            raise error.error from None
                        raise APIConnectionError(f"Live read kept failing: {error}") from error
                    await asyncio.sleep(self._client.retries.reconnect_delay(failures, response_of(error)))
                    failures += 1
                finally:
                    await live.aclose()
        finally:
            if heart is not None:
                await heart.stop()

    async def _read_live(self, cursor: Cursor) -> AsyncGenerator[Record, None]:
        call = Call("GET", self._path, headers=cursor.headers())
        request = call.build(self._client._http, self._client.base_url, self._client.token)
        response = await self._client._http.send(request, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                if should_retry_response(response, call) or response.status_code >= 500:
                    raise RetryableStatus(status_error(response))
                raise status_error(response)
            decoder = SSEDecoder()
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    for record in cursor.take(event):
                        yield record
                    if cursor.closed:
                        return
        finally:
            await response.aclose()


class _AsyncHeartbeat:
    """Heartbeats a run from an asyncio task every third of its lease, until stopped."""

    def __init__(self, runs: AsyncRuns, run_id: str) -> None:
        self._runs = runs
        self._run_id = run_id
        self.final: RunFinalError | None = None
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        lease = DEFAULT_LEASE_SECONDS
        while True:
            try:
                run = await self._runs.heartbeat(self._run_id)
                lease = float(run.lease_seconds or lease)
                interval = lease / 3
            except RunFinalError as error:
                self.final = error
                return
            except SessionsError:
                interval = lease / 6
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
