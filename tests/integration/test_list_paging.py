"""Keyset paging over rows that share one ``created_at`` (DESIGN decision 2), on SQLite and PostgreSQL.

Forward with ``page[after]`` to the end, then all the way back with ``page[before]`` from the last
page: every session exactly once, in the same order both ways, page for page.
"""

from datetime import datetime, timedelta

import pytest

from session_core.models import utcnow
from tests.integration.sessions_api import bearer

SESSIONS = "/api/v1/sessions"


def fetch_page(client, env, **params):
    response = client.get(SESSIONS, query_string=params, headers=bearer(env.api_key))
    assert response.status_code == 200, response.get_json()
    page = response.get_json()
    return [item["id"] for item in page["data"]], page["pagination"]


def page_forward(client, env, size, **filters):
    pages, pagination = [], {}
    while True:
        after = {"page[after]": pagination["next"]} if "next" in pagination else {}
        ids, pagination = fetch_page(client, env, **filters, **{"page[size]": size}, **after)
        pages.append(ids)
        if "next" not in pagination:
            return pages, pagination


def page_backward(client, env, size, pagination, **filters):
    """Pages before the one ``pagination`` belongs to, nearest first."""
    pages = []
    while "previous" in pagination:
        ids, pagination = fetch_page(
            client, env, **filters, **{"page[size]": size, "page[before]": pagination["previous"]}
        )
        pages.append(ids)
    return pages


def insert_many(insert_session, count, created_at, **fields):
    return [insert_session(created_at=created_at, updated_at=created_at, **fields) for _ in range(count)]


@pytest.mark.parametrize("size", [7, 100])
def test_paging_forward_then_back_over_250_equal_timestamps_never_repeats_or_skips(
    client, env, insert_session, size
):
    moment = datetime(2026, 3, 1, 12, 0, 0)
    stored = insert_many(insert_session, 250, moment)

    forward, last = page_forward(client, env, size)
    backward = page_backward(client, env, size, last)

    listed = [session_id for page in forward for session_id in page]
    assert len(listed) == len(set(listed)) == 250
    assert listed == sorted((s.friendly_id for s in stored), reverse=True)
    assert all(len(page) == size for page in forward[:-1])
    assert backward == forward[-2::-1]


def test_paging_across_groups_of_equal_timestamps_keeps_newest_first_order(client, env, insert_session):
    start = utcnow() - timedelta(days=1)
    groups = [insert_many(insert_session, 9, start + timedelta(seconds=n)) for n in range(5)]

    forward, last = page_forward(client, env, 4)
    backward = page_backward(client, env, 4, last)

    listed = [session_id for page in forward for session_id in page]
    expected = [
        s.friendly_id for group in reversed(groups) for s in sorted(group, key=lambda s: s.id, reverse=True)
    ]
    assert listed == expected
    assert backward == forward[-2::-1]


def test_paging_with_a_filter_walks_only_the_matching_sessions(client, env, insert_session):
    moment = datetime(2026, 3, 1, 12, 0, 0)
    wanted = insert_many(insert_session, 20, moment, task_identifier="wanted")
    insert_many(insert_session, 20, moment, task_identifier="other")
    task = {"filter[taskIdentifier]": "wanted"}

    forward, last = page_forward(client, env, 3, **task)
    backward = page_backward(client, env, 3, last, **task)

    listed = [session_id for page in forward for session_id in page]
    assert listed == sorted((s.friendly_id for s in wanted), reverse=True)
    assert backward == forward[-2::-1]
