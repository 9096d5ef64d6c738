"""One-time-use tokens: a JWT with ``otu: true`` authorizes exactly one request, on every worker."""

from __future__ import annotations

from session_core.repositories.ports import AbstractUnitOfWork


def spend_one_time_token(uow: AbstractUnitOfWork, token_hash: str, expires_at: int, now: float) -> bool:
    """Record the use of the token with SHA-256 ``token_hash``; True only for its first use.

    The database decides (a primary key on the hash), so concurrent uses on any number of workers
    let exactly one through. The row is kept until ``expires_at``, when the token stops verifying.
    """
    with uow:
        first = uow.spent_tokens.spend(token_hash, expires_at, int(now))
        uow.commit()
    return first
