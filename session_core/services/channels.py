"""Channel use cases: initialize, append and read a session's ``.in`` / ``.out`` (wire reference §7).

Each use case checks scopes and the session's state in the wire's order, then works on the channel
store; none of them knows about HTTP. Records carry the envelope of ``session_core.envelopes``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from session_core.auth import mint_token
from session_core.channels.flight import SingleFlight
from session_core.channels.group_commit import GroupCommit
from session_core.channels.records import (
    Append,
    AppendAck,
    NewRecord,
    OpenSession,
    ReadBatch,
    channel_key,
    stream_name,
)
from session_core.envelopes import check_envelope_size, envelope, is_command_record, is_turn_complete, part_id
from session_core.errors import NotFound, SessionsError
from session_core.ids import is_session_friendly_id
from session_core.models import (
    ChannelRecord,
    Io,
    RunReason,
    Session,
    SessionStatus,
    refuse_if_not_active,
    session_status,
)
from session_core.repositories.ports import AbstractUnitOfWork, UnitOfWorkFactory
from session_core.scopes import (
    Principal,
    authorize,
    authorize_agent_for_out,
    can,
    stream_token_scopes,
    super_scopes,
)
from session_core.services.runs import RunLauncher, current_run_is_live, ensure_run

logger = logging.getLogger(__name__)

#: An S2 access token lives as long as S2's own (24 h); it names one stream and nothing else.
STREAM_TOKEN_TTL_SECONDS = 24 * 3600
#: How far back from the tail a settled peek looks for the last non-command record.
SETTLED_PEEK_RECORDS = 16
#: A read batch (an SSE ``batch`` event, an S2 read) holds records up to this many stored bytes,
#: plus at most one record, as S2 caps its read batches (1 MiB).
MAX_BATCH_BYTES = 1024 * 1024


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of a naive UTC datetime."""
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def stream_token_ttl(principal: Principal, now: float) -> int:
    """How long an S2 token minted for ``principal`` at ``now`` (epoch seconds) may live: S2's 24 h,
    but never past the caller's own token, so a one-hour session token yields at most one hour."""
    if principal.expires_at is None:
        return STREAM_TOKEN_TTL_SECONDS
    return max(0, min(STREAM_TOKEN_TTL_SECONDS, principal.expires_at - int(now)))


@dataclass(frozen=True)
class ChannelGrant:
    """What ``PUT`` hands a direct writer: the stream's name and a token for that stream alone."""

    stream_name: str
    access_token: str


def initialize_channel(
    uow: AbstractUnitOfWork, principal: Principal, session_ref: str, io: Io, now: datetime
) -> ChannelGrant:
    """Grant direct S2 access to one channel.

    Scopes are checked on the URL value first (action-route order). A ``session_…`` id needs a
    row; an externalId does not, and then names the channel itself.

    :raise Forbidden: the token may not write this session, or a token (not a key) asks for ``.out``.
    :raise NotFound: a friendly id without a session.
    :raise SessionClosed: the session is closed or expired.
    """
    authorize(principal, "write", {"sessions": [session_ref]})
    with uow:
        session = uow.sessions.get_by_ref(principal.environment.id, session_ref)
    authorize_agent_for_out(principal, io, "Initializing", session)
    if session is None and is_session_friendly_id(session_ref):
        raise NotFound("Session not found")
    if session is not None:
        refuse_if_not_active(session, now, "initialize a channel on")
    name = stream_name(session.addressing_key if session else session_ref, io)
    issued = now.replace(tzinfo=UTC).timestamp()
    ttl = stream_token_ttl(principal, issued)
    token = mint_token(principal.environment, stream_token_scopes(name), ttl_seconds=ttl, now=issued)
    return ChannelGrant(name, token)


@dataclass(frozen=True)
class ChannelAppend:
    """One caller's append to a channel, as a group commit carries it: who, what, when."""

    principal: Principal
    body: str
    part: str | None
    now: datetime


#: Concurrent appends of one process to one channel, keyed by (environment id, session ref, io).
AppendGroups = GroupCommit[tuple[str, str, Io], ChannelAppend, int]


def append_to_channel(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    groups: AppendGroups,
    session_ref: str,
    io: Io,
    append: ChannelAppend,
    part_id_ttl_seconds: int,
) -> int:
    """Append ``append.body``, unparsed, in the record envelope and return the record's seq_num.

    The append commits before this returns. Appends to the same channel arriving while one is
    being written are written together in one transaction (``GroupCommit``), each checked and
    answered as if alone: its own seq_num, or its own error. A part id (``X-Part-Id``) seen on the
    channel within the TTL returns the first append's seq_num and writes nothing. The session row
    is read with a shared lock, so a racing close commits after this append, never between check
    and write. After an append to ``.in`` the session gets a live run (``ensure_run_after_append``).

    :raise PayloadTooLarge: the record would be stored over ``MAX_RECORD_BYTES`` (checked first,
        as the wire checks the size before scopes).
    :raise Forbidden: the token may not write this session, or is not the agent's on ``.out``.
    :raise NotFound: no such session (only after the scope check, so tokens learn nothing).
    :raise SessionClosed: the session is closed or expired.
    """
    check_envelope_size(append.body, append.part)

    def run(batch: list[ChannelAppend]) -> list[int | SessionsError]:
        return _append_batch(uow, launcher, session_ref, io, batch, part_id_ttl_seconds)

    key = (append.principal.environment.id, session_ref, io)
    return groups.submit(key, append, run, size=len(append.body))


def _check_append(append: ChannelAppend, session_ref: str, session: Session | None, io: Io) -> None:
    """The checks of one append, in the wire's order (scopes first, so tokens learn nothing)."""
    ids = [session_ref] if session is None else [session_ref, session.friendly_id, session.external_id]
    authorize(append.principal, "write", {"sessions": ids})
    if session is None:
        raise NotFound("Resource not found")
    refuse_if_not_active(session, append.now, "append to")
    authorize_agent_for_out(append.principal, io, "Appending to", session)


def _passes_without_session(append: ChannelAppend, session_ref: str, io: Io) -> bool:
    """Whether an append passes the checks that need no session row: scopes on ``session_ref`` (the
    session's other names could only add to them) and a secret key for ``.out``."""
    return can(append.principal, "write", {"sessions": [session_ref]}, super_scopes("write")) and (
        io != "out" or append.principal.is_agent_of(session_ref)
    )


def _errors(
    batch: list[ChannelAppend], session_ref: str, session: Session | None, io: Io
) -> dict[int, SessionsError]:
    """Each refused append of ``batch`` (by index) with its error."""
    errors: dict[int, SessionsError] = {}
    for index, append in enumerate(batch):
        try:
            _check_append(append, session_ref, session, io)
        except SessionsError as error:
            errors[index] = error
    return errors


def _stored(append: ChannelAppend) -> Append:
    return Append([NewRecord(envelope(append.body, append.part or part_id()))], append.part)


def _outcomes(
    size: int, errors: dict[int, SessionsError], accepted: list[int], acks: list[AppendAck]
) -> list[int | SessionsError]:
    seq_nums = {index: ack.start.seq_num for index, ack in zip(accepted, acks, strict=True)}
    return [errors[index] if index in errors else seq_nums[index] for index in range(size)]


def _append_batch(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    session_ref: str,
    io: Io,
    batch: list[ChannelAppend],
    part_id_ttl_seconds: int,
) -> list[int | SessionsError]:
    """Check each append of a batch and write those that pass; one outcome each.

    Most batches are written at once (``_append_at_once``): one round trip on PostgreSQL, commit
    included. The appends it leaves undecided are written after reading the session first
    (``_append_after_lookup``).
    """
    outcomes, undecided = _append_at_once(uow, launcher, session_ref, io, batch, part_id_ttl_seconds)
    if undecided:
        rest = _append_after_lookup(
            uow, launcher, session_ref, io, [batch[index] for index in undecided], part_id_ttl_seconds
        )
        outcomes.update(zip(undecided, rest, strict=True))
    return [outcomes[index] for index in range(len(batch))]


def _append_at_once(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    session_ref: str,
    io: Io,
    batch: list[ChannelAppend],
    part_id_ttl_seconds: int,
) -> tuple[dict[int, int | SessionsError], list[int]]:
    """Write, in one statement, the appends that pass the checks needing no session row, if the
    session ``session_ref`` names (by either name) is open; decide the others with the row it read.

    Open at the latest arrival means open at every earlier one, and scopes on ``session_ref``
    are enough whatever the row says, so every append written is one that ``_check_append``
    accepts: the statement commits on its own (``AbstractUnitOfWork.autocommit``). Returns the outcomes
    decided (by batch index) and the indexes left undecided: appends that pass with the row but
    were not written (a token scoped to the session's other name, expiry between two arrivals).
    """
    eligible = [
        index for index, append in enumerate(batch) if _passes_without_session(append, session_ref, io)
    ]
    if not eligible:
        return {}, list(range(len(batch)))
    environment_id = batch[0].principal.environment.id
    now = max(batch[index].now for index in eligible)
    with uow.autocommitting() as writer:
        guarded = writer.channels.append_while_open(
            OpenSession(environment_id, session_ref, now),
            io,
            [_stored(batch[index]) for index in eligible],
            now_ms=epoch_ms(now),
            part_id_ttl_ms=part_id_ttl_seconds * 1000,
        )
        writer.commit()
    outcomes: dict[int, int | SessionsError] = dict(_errors(batch, session_ref, guarded.session, io))
    if guarded.acks is not None:
        outcomes.update((index, ack.start.seq_num) for index, ack in zip(eligible, guarded.acks, strict=True))
        if guarded.session is not None:
            ensure_run_after_append(uow, launcher, guarded.session, io, now)
    return outcomes, [index for index in range(len(batch)) if index not in outcomes]


def ensure_run_after_append(
    uow: AbstractUnitOfWork, launcher: RunLauncher, session: Session, io: Io, now: datetime
) -> None:
    """After a committed append to ``.in``, give the session a live run if its current one is not.

    A message for an agent whose run ended or whose lease lapsed starts a new run (reason
    ``continuation``). The claim runs in its own transaction with the session row locked for
    update, so concurrent appends start exactly one run. As Trigger.dev's append route does it,
    best effort: a failure is logged and the append stands.
    """
    if io != "in":
        return
    with uow.autocommitting() as reader:
        if current_run_is_live(reader, session, now):
            return
    try:
        with uow:
            current = uow.sessions.get_by_ref(session.environment_id, session.friendly_id, lock="update")
            if current is None or session_status(current, now) is not SessionStatus.ACTIVE:
                return
            ensure_run(uow, launcher, current, RunReason.CONTINUATION, now)
            uow.commit()
    except SessionsError as error:
        logger.warning("run not ensured session=%s error=%s", session.friendly_id, error.message)


def _append_after_lookup(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    session_ref: str,
    io: Io,
    batch: list[ChannelAppend],
    part_id_ttl_seconds: int,
) -> list[int | SessionsError]:
    """Read the session with a shared lock, check each append against it, write those that pass;
    then give the session a live run if it has none (``ensure_run_after_append``)."""
    environment_id = batch[0].principal.environment.id
    with uow:
        session = uow.sessions.get_by_ref(environment_id, session_ref, lock="share")
        errors = _errors(batch, session_ref, session, io)
        accepted = [index for index in range(len(batch)) if index not in errors]
        if session is None or not accepted:
            return list(errors.values())
        now = max(batch[index].now for index in accepted)
        acks = uow.channels.append_group(
            channel_key(session.environment_id, session.addressing_key, io),
            [_stored(batch[index]) for index in accepted],
            now_ms=epoch_ms(now),
            part_id_ttl_ms=part_id_ttl_seconds * 1000,
        )
        uow.commit()
    ensure_run_after_append(uow, launcher, session, io, now)
    return _outcomes(len(batch), errors, accepted, acks)


#: Session lookups shared by the readers that name one session (environment id, ref) at once:
#: thousands of readers connecting together cost one query, not one each. A reader that joins a
#: lookup under way gets its answer from just before it arrived, as ``Services.reads`` does.
SessionLookups = SingleFlight[tuple[str, str], Session | None]


def find_session_for_read(
    uow: AbstractUnitOfWork,
    principal: Principal,
    session_ref: str,
    not_found: str = "Not found",
    lookups: SessionLookups | None = None,
) -> Session | None:
    """The session a reader names, checked in loader order: existence, then scopes.

    A ``session_…`` id needs a row and is NotFound *before* the scope check, as Trigger.dev's
    loaders answer; an externalId needs no row (None: it names its channel itself).

    :raise NotFound: a friendly id without a session (``not_found`` is the message).
    :raise Forbidden: the token may read none of the session's names.
    """
    environment_id = principal.environment.id

    def look_up() -> Session | None:
        with uow:
            return uow.sessions.get_by_ref(environment_id, session_ref)

    session = look_up() if lookups is None else lookups.do((environment_id, session_ref), look_up)
    if session is None and is_session_friendly_id(session_ref):
        raise NotFound(not_found)
    ids = (
        [session_ref]
        if session is None
        else [session.addressing_key, session.friendly_id, session.external_id]
    )
    authorize(principal, "read", {"sessions": ids})
    return session


def resolve_channel_for_read(
    uow: AbstractUnitOfWork,
    principal: Principal,
    session_ref: str,
    io: Io,
    lookups: SessionLookups | None = None,
) -> str:
    """Return the store key of the channel a reader asks for (``find_session_for_read``'s checks).

    :raise NotFound: a friendly id without a session.
    :raise Forbidden: the token may read none of the session's names.
    """
    session = find_session_for_read(uow, principal, session_ref, lookups=lookups)
    return channel_key(principal.environment.id, session.addressing_key if session else session_ref, io)


def read_batch(
    uow: AbstractUnitOfWork, key: str, start_seq: int, limit: int, max_bytes: int = MAX_BATCH_BYTES
) -> ReadBatch:
    """Read up to ``limit`` records from ``start_seq`` (``max_bytes`` of them plus at most one),
    with the tail, in one statement.

    One snapshot serves both, so the tail is never behind the last record returned, and a reader
    that moves to the tail after an empty read skips only trimmed records, never a committed one.
    """
    with uow:
        records, tail = uow.channels.read_with_tail(key, start_seq, limit, max_bytes)
    return ReadBatch(records, tail)


def read_page(
    uow: AbstractUnitOfWork, key: str, start_seq: int, max_records: int, max_bytes: int
) -> list[ChannelRecord]:
    """Read from ``start_seq`` up to the channel's end, ``max_records`` records, or the record whose
    stored bytes bring the page to ``max_bytes`` (so at most ``max_bytes`` plus one record).

    One statement, bounded in the database: a catch-up of thousands of records costs its caller
    one request, and a page of huge records never loads more than its bound.
    """
    with uow:
        return uow.channels.read(key, start_seq, max_records, max_bytes)


def is_settled(uow: AbstractUnitOfWork, key: str) -> bool:
    """Whether the channel's last non-command record is a turn-complete (a settled ``.out``).

    The last records are read in byte-bounded batches, keeping only the last non-command one, so
    a channel ending in huge records costs no more memory than one read batch.
    """
    last: ChannelRecord | None = None
    with uow:
        tail = uow.channels.tail(key)
        start = max(0, tail.seq_num - SETTLED_PEEK_RECORDS)
        while start < tail.seq_num:
            records = uow.channels.read(key, start, tail.seq_num - start, MAX_BATCH_BYTES)
            if not records:
                break
            last = next((r for r in reversed(records) if not is_command_record(r)), last)
            start = records[-1].seq_num + 1
    return last is not None and is_turn_complete(last)


@dataclass(frozen=True)
class LiveRead:
    """A channel about to be tailed (its store key), and whether it is settled (``.out`` ended a turn)."""

    key: str
    is_settled: bool


def open_live_read(
    uow_factory: UnitOfWorkFactory,
    principal: Principal,
    session_ref: str,
    io: Io,
    peek_settled: bool,
    lookups: SessionLookups | None = None,
) -> LiveRead:
    """Resolve a live read; with ``peek_settled``, also check whether ``.out`` ended on a turn-complete.

    :raise NotFound: a friendly id without a session.
    :raise Forbidden: the token may read none of the session's names.
    """
    key = resolve_channel_for_read(uow_factory(), principal, session_ref, io, lookups)
    return LiveRead(key, peek_settled and io == "out" and is_settled(uow_factory(), key))


def append_records(
    uow: AbstractUnitOfWork,
    launcher: RunLauncher,
    session_ref: str,
    io: Io,
    append: ChannelAppend,
    records: list[NewRecord],
    trim_before: int | None,
    part_id_ttl_seconds: int,
) -> list[int]:
    """Append ``records`` at once (one seq_num each) and trim below ``trim_before``; the seq_nums.

    The checks are ``append_to_channel``'s; ``append.part`` (``X-Part-Id``) de-duplicates the whole
    request. The trim never reaches the records just written.
    """
    with uow:
        session = uow.sessions.get_by_ref(append.principal.environment.id, session_ref, lock="share")
        _check_append(append, session_ref, session, io)
        assert session is not None
        key = channel_key(session.environment_id, session.addressing_key, io)
        ack = uow.channels.append(
            key,
            records,
            now_ms=epoch_ms(append.now),
            part_id=append.part,
            part_id_ttl_ms=part_id_ttl_seconds * 1000,
        )
        if trim_before is not None and not ack.is_duplicate:
            uow.channels.trim(key, min(trim_before, ack.start.seq_num))
        uow.commit()
    ensure_run_after_append(uow, launcher, session, io, append.now)
    return list(range(ack.start.seq_num, ack.end.seq_num))
