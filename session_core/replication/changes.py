"""Assemble decoded pgoutput messages into committed transactions of ClickHouse rows.

Pure. Changes are buffered from Begin to Commit and released together, stamped with the commit's
end LSN as ``_version``: a transaction reaches ClickHouse whole or (after a crash) is replayed whole.
Within a transaction the later change to a row wins (the pending set keeps the last one of equal
version). Only ``public.sessions`` is replicated; other relations are ignored.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from session_core.replication.decode import (
    Begin,
    Commit,
    DecodeError,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
    decode_message,
    decode_row,
)
from session_core.replication.rows import to_clickhouse_row

__all__ = ["ChangeAssembler", "CommittedChanges"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommittedChanges:
    commit_lsn: int
    """The commit's end LSN: the rows' ``_version`` and what is acknowledged once they are stored."""
    commit_time: datetime
    rows: list[dict[str, object]]
    events: Counter[str] = field(default_factory=Counter)
    """Changes by kind (``insert``, ``update``, ``delete``), for the events_processed metric."""


@dataclass
class _Open:
    changes: list[tuple[str, dict[str, object]]] = field(default_factory=list)


class ChangeAssembler:
    def __init__(self, schema: str = "public", table: str = "sessions") -> None:
        self._schema = schema
        self._table = table
        self._relations: dict[int, Relation] = {}
        self._open: _Open | None = None

    @property
    def in_transaction(self) -> bool:
        return self._open is not None

    def feed(self, payload: bytes) -> CommittedChanges | None:
        """Consume one message; return the transaction's rows when it is a Commit.

        :raise DecodeError: on a malformed message, a change outside a transaction, or a change to a
            relation never described.
        """
        message = decode_message(payload)
        if isinstance(message, Relation):
            self._relations[message.relid] = message
        elif isinstance(message, Begin):
            self._open = _Open()
        elif isinstance(message, Commit):
            return self._commit(message)
        elif isinstance(message, Insert | Update | Delete):
            self._change(message)
        elif isinstance(message, Truncate):
            if any(self._is_ours(relid) for relid in message.relids):
                logger.warning("truncate of %s.%s not replicated to clickhouse", self._schema, self._table)
        return None

    def _is_ours(self, relid: int) -> bool:
        relation = self._relations.get(relid)
        return relation is not None and (relation.namespace, relation.name) == (self._schema, self._table)

    def _change(self, message: Insert | Update | Delete) -> None:
        if self._open is None:
            raise DecodeError("row change outside a transaction")
        relation = self._relations.get(message.relid)
        if relation is None:
            raise DecodeError(f"row change for undescribed relation {message.relid}")
        if not self._is_ours(message.relid):
            return
        if isinstance(message, Insert):
            self._open.changes.append(("insert", decode_row(relation, message.new)))
        elif isinstance(message, Update):
            self._open.changes.append(("update", decode_row(relation, message.new, message.old)))
        else:
            self._open.changes.append(("delete", decode_row(relation, message.old)))

    def _commit(self, message: Commit) -> CommittedChanges:
        if self._open is None:
            raise DecodeError("commit without a transaction")
        changes, self._open = self._open.changes, None
        rows = []
        for kind, row in changes:
            try:
                rows.append(to_clickhouse_row(row, version=message.end_lsn, is_deleted=kind == "delete"))
            except (KeyError, ValueError) as exc:
                raise DecodeError(f"cannot map sessions row id={row.get('id')}: {exc!r}") from None
        return CommittedChanges(
            commit_lsn=message.end_lsn,
            commit_time=message.commit_time,
            rows=rows,
            events=Counter(kind for kind, _ in changes),
        )
