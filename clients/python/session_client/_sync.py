"""The blocking client: ``SessionsClient`` and its resources (sessions, channels, runs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
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
from session_client._requests import (
    append_call,
    create_call,
    update_call,
    write_call,
)

__all__ = ["Channel", "Runs", "Sessions", "SessionsClient"]


class SessionsClient:
    """A blocking client for one server and one token (a secret key, a session token or a run token).

    ``sessions``, ``runs`` and ``channel(ref, io)`` are the API. A run token's run (its ``runId``
    claim) is ``run_id``; heartbeats replace ``token`` with the fresh one they return. Use it as a
    context manager, or call ``close()``, to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: Retries | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retries = retries or Retries()
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self.sessions = Sessions(self)
        self.runs = Runs(self)

    @property
    def run_id(self) -> str | None:
        """The run this client's token belongs to, when it is a run token."""
        return run_id_of(self.token)

    def channel(self, ref: str, io: Io) -> Channel:
        """Session ``ref``'s ``.in`` or ``.out`` channel (``ref``: a ``session_…`` id or an externalId)."""
        channel_path(ref, io)  # checks io
        return Channel(self, ref, io)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SessionsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying what the policy allows; return a 2xx response or raise."""
        retry = 0
        while True:
            try:
                response = self._http.send(call.build(self._http, self.base_url, self.token))
            except httpx.TransportError as error:
                if retry < self.retries.max_retries and should_retry_error(error, call):
                    time.sleep(self.retries.delay(retry))
                    retry += 1
                    continue
                raise connection_error(error) from error
            if response.is_success:
                return response
            if retry < self.retries.max_retries and should_retry_response(response, call):
                time.sleep(self.retries.delay(retry, response))
                retry += 1
                continue
            raise status_error(response)

    def json(self, call: Call) -> Any:
        return self.request(call).json()


class Sessions:
    """``client.sessions``: create, retrieve, update, close and list sessions."""

    def __init__(self, client: SessionsClient) -> None:
        self._client = client

    def create(
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
        """Create a session, or return the one with this ``external_id`` (``is_cached``) and its run."""
        call = create_call(type, task_identifier, trigger_config, external_id, tags, metadata, expires_at)
        return created_from_wire(self._client.json(call))

    def retrieve(self, ref: str) -> Session:
        return session_from_wire(self._client.json(Call("GET", session_path(ref))))

    def update(
        self, ref: str, *, tags: Sequence[str] | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        """Replace the given fields (those left None stay as they are)."""
        return session_from_wire(self._client.json(update_call(ref, tags, metadata)))

    def close(self, ref: str, reason: str | None = None) -> Session:
        """Close the session (idempotent: a second close keeps the first's time and reason)."""
        body = {} if reason is None else {"reason": reason}
        return session_from_wire(self._client.json(Call("POST", session_path(ref) + "/close", json=body)))

    def list(
        self,
        *,
        type: str | Sequence[str] | None = None,
        tag: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        task_identifier: str | Sequence[str] | None = None,
        external_id: str | Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[Session]:
        """Every session matching the filters, newest first, fetching page after page as you iterate."""
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
            page = self._client.json(Call("GET", "/api/v1/sessions", params=params))
            yield from (session_from_wire(item) for item in page["data"])
            after = (page.get("pagination") or {}).get("next")
            if not after or not page["data"]:
                return
            params = {**params, "page[after]": after}


class Runs:
    """``client.runs``: a run's status, and the agent's heartbeat, completion and failure."""

    def __init__(self, client: SessionsClient) -> None:
        self._client = client

    def retrieve(self, run_id: str) -> Run:
        return run_from_wire(self._client.json(Call("GET", run_path(run_id))))

    def heartbeat(self, run_id: str) -> Run:
        """Keep the run's lease (the first heartbeat starts the run); a final run raises
        ``RunFinalError``. When this client holds that run's token, it switches to the fresh one."""
        run = run_from_wire(self._client.json(Call("POST", run_path(run_id) + "/heartbeat", json={})))
        if run.token and self._client.run_id == run_id:
            self._client.token = run.token
        return run

    def complete(self, run_id: str, output: Any = None) -> Run:
        body = {} if output is None else {"output": output}
        return run_from_wire(self._client.json(Call("POST", run_path(run_id) + "/complete", json=body)))

    def fail(self, run_id: str, error: Any) -> Run:
        call = Call("POST", run_path(run_id) + "/fail", json={"error": error})
        return run_from_wire(self._client.json(call))

    def list(self, session_ref: str) -> list[Run]:
        """The session's runs, newest first."""
        body = self._client.json(Call("GET", session_path(session_ref) + "/runs"))
        return [run_from_wire(item) for item in body["data"]]


class Channel:
    """A session's ``.in`` or ``.out``: append to it, read what it holds, or follow it live."""

    def __init__(self, client: SessionsClient, ref: str, io: Io) -> None:
        self._client = client
        self.ref = ref
        self.io = io
        self._path = channel_path(ref, io)

    def append(self, data: Any, part_id: str | None = None, headers: Headers | None = None) -> int:
        """Append one record and return its seq_num.

        A string without headers is stored as it is; anything else JSON-able is stored as JSON
        (read back as the same value). Retried safely: the part id (``X-Part-Id``, generated when
        not given) makes the server store a retried append once.
        """
        call, from_batch = append_call(self._path, data, part_id or new_part_id(), headers)
        body = self._client.json(call)
        return int(body["seqNums"][0] if from_batch else body["seq"])

    def write(
        self,
        records: Sequence[DataRecord | ControlRecord],
        *,
        trim_before: int | None = None,
        part_id: str | None = None,
    ) -> list[int]:
        """Append several data and control records at once (one request, stored together), then,
        with ``trim_before``, drop the channel's records below that seq_num. Returns their seq_nums.
        """
        body = self._client.json(write_call(self._path, records, trim_before, part_id or new_part_id()))
        return [int(seq) for seq in body["seqNums"]]

    def records(self, after: int | None = None) -> Iterator[Record]:
        """Every record stored now (after seq_num ``after``), page by page; control records included."""
        while True:
            params = None if after is None else {"afterEventId": str(after)}
            page = self._client.json(Call("GET", self._path + "/records", params=params))["records"]
            if not page:
                return
            for item in page:
                record = record_from_page(item)
                after = record.seq_num
                yield record

    def subscribe(self, after: int | None = None, *, reconnects: int = 20) -> Iterator[Record]:
        """Follow the channel live, from after seq_num ``after`` (from the start when None).

        Reconnects on its own after a dropped connection, a server restart or the end of a long
        poll, resuming after the last record delivered (``Last-Event-ID``): no record is repeated
        or skipped. Ends after the session-closed marker, which it yields. ``reconnects`` bounds
        consecutive failed attempts. Holding a run token, it heartbeats that run every third of
        the lease while open, and raises ``RunFinalError`` once the run is over.
        """
        cursor = Cursor(after)
        heart = _Heartbeat(self._client.runs, self._client.run_id) if self._client.run_id else None
        try:
            failures = 0
            while not cursor.closed:
                if heart is not None and heart.final is not None:
                    raise heart.final
                live = self._read_live(cursor)
                delivered = False
                try:
                    for record in live:
                        failures, delivered = 0, True
                        if heart is not None and heart.final is not None:
                            raise heart.final  # a run that lost its lease hands nothing more over
                        yield record
                    failures = 0
                    if not delivered:  # a read that ended empty: the long poll's end, or a proxy's
                        time.sleep(self._client.retries.reconnect_delay(0))
                except (httpx.TransportError, Reconnect, RetryableStatus) as error:
                    if failures >= reconnects:
                        if isinstance(error, httpx.TransportError):
                            raise connection_error(error) from error
                        if isinstance(error, RetryableStatus):
                            raise error.error from None
                        raise APIConnectionError(f"Live read kept failing: {error}") from error
                    time.sleep(self._client.retries.reconnect_delay(failures, response_of(error)))
                    failures += 1
                finally:
                    live.close()
        finally:
            if heart is not None:
                heart.stop()

    def _read_live(self, cursor: Cursor) -> Generator[Record, None, None]:
        call = Call("GET", self._path, headers=cursor.headers())
        request = call.build(self._client._http, self._client.base_url, self._client.token)
        response = self._client._http.send(request, stream=True)
        try:
            if not response.is_success:
                response.read()
                if should_retry_response(response, call) or response.status_code >= 500:
                    raise RetryableStatus(status_error(response))
                raise status_error(response)
            decoder = SSEDecoder()
            for line in response.iter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield from cursor.take(event)
                    if cursor.closed:
                        return
        finally:
            response.close()


class _Heartbeat:
    """Heartbeats a run from a background thread every third of its lease, until stopped.

    A final run (``RunFinalError``) ends the thread and is kept in ``final`` for the reader;
    other failures are retried at a shorter interval.
    """

    def __init__(self, runs: Runs, run_id: str) -> None:
        self._runs = runs
        self._run_id = run_id
        self._stopped = threading.Event()
        self.final: RunFinalError | None = None
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        lease = DEFAULT_LEASE_SECONDS
        while not self._stopped.is_set():
            interval = lease / 3
            try:
                run = self._runs.heartbeat(self._run_id)
                lease = float(run.lease_seconds or lease)
                interval = lease / 3
            except RunFinalError as error:
                self.final = error
                return
            except SessionsError:
                interval = lease / 6
            self._stopped.wait(interval)

    def stop(self) -> None:
        self._stopped.set()
