"""The published @trigger.dev/core ApiClient against a live server's control plane (wire §4, §5, §10, §13).

`js/control_plane.mjs` drives create, retrieve, update, list and close through the real client, in a
fresh environment, and prints what it observed; these tests check those observations, once on
PostgreSQL and once on the embedded SQLite default. The client comes from `tests/e2e/js`
(`npm ci --prefix tests/e2e/js`, run by `.ci/run` and tox's e2e env); without it the run fails.
"""

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.servers import LiveServer

JS = Path(__file__).parent / "js"
INSTALL = "npm ci --prefix tests/e2e/js"


def _pinned_core_version() -> str:
    return json.loads((JS / "package.json").read_text())["dependencies"]["@trigger.dev/core"]


def _installed_core_version() -> str | None:
    manifest = JS / "node_modules" / "@trigger.dev" / "core" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.is_file() else None


def _require_the_published_client() -> None:
    if shutil.which("node") is None:
        pytest.fail(f"node is not installed: install Node 20+ (apt-get install nodejs npm), then  {INSTALL}")
    installed, pinned = _installed_core_version(), _pinned_core_version()
    if installed != pinned:
        found = f"version {installed} is installed" if installed else "it is not installed"
        pytest.fail(f"@trigger.dev/core {pinned} is needed but {found}: run  {INSTALL}", pytrace=False)


@pytest.fixture(scope="module", params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def seen(request, tmp_path_factory):
    """What the client observed against a fresh server on each database (one node run per database)."""
    _require_the_published_client()
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres")
        database = postgres.create_database()
        url = postgres.database_url(database)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('control-plane')}/sessions.db"
    try:
        with LiveServer(url, workers=2) as live:
            key = live.create_env(f"client-{uuid.uuid4().hex[:8]}")["apiKey"]

            done = subprocess.run(
                ["node", "control_plane.mjs", live.base_url, key],
                cwd=JS, capture_output=True, text=True, timeout=240,
            )  # fmt: skip

            assert done.returncode == 0, f"{done.stderr}\n--- server log ---\n{live.log()}"
            yield json.loads(done.stdout)
    finally:
        if request.param == "postgres":
            postgres.drop_database(database)


def _ids(seen) -> dict:
    """The sessions the script created, by role, and all of them newest first."""
    main = seen["create"]["session"]["id"]
    pages, late = seen["pageIds"], seen["lateIds"]
    return {
        "main": main,
        "pages": pages,
        "late": late,
        "expired": late[2],
        "closed": seen["closedPageIds"],
        "newest_first": [*reversed(late), *reversed(pages), main],
    }


def _newest_first(seen, members) -> list[str]:
    """The ids among `members`, in the list endpoint's order (newest first)."""
    wanted = set(members)
    return [i for i in _ids(seen)["newest_first"] if i in wanted]


def test_the_client_under_test_is_the_pinned_published_version():
    _require_the_published_client()

    assert _installed_core_version() == _pinned_core_version() == "4.8.3"


def test_create_answers_201_with_a_new_session_its_run_and_a_token(seen):
    created = seen["create"]
    session = created["session"]

    assert (created["status"], created["isCached"], created["hasToken"]) == (201, False, True)
    assert session["id"].startswith("session_") and len(session["id"]) == len("session_") + 25
    assert created["runId"].startswith("run_")
    assert session["currentRunId"] == created["runId"]
    assert session["externalId"] == f"chat-{seen['run']}"
    assert (session["type"], session["taskIdentifier"]) == ("chat.agent", "agent")
    assert session["triggerConfig"] == {
        "basePayload": {"chatId": f"chat-{seen['run']}"},
        "idleTimeoutInSeconds": 60,
        "maxAttempts": 3,
    }
    assert session["tags"] == [f"chat:chat-{seen['run']}", "alpha"]
    assert session["metadata"] == {"owner": "compat", "n": 1}
    assert (session["closedAt"], session["closedReason"], session["expiresAt"]) == (None, None, None)
    assert session["datesAreDates"] is True


def test_create_again_answers_200_cached_with_the_same_session_and_run(seen):
    first, again = seen["create"], seen["createAgain"]

    assert (again["status"], again["isCached"]) == (200, True)
    assert again["session"]["id"] == first["session"]["id"]
    assert again["runId"] == first["runId"]
    assert again["session"]["createdAt"] == first["session"]["createdAt"]


def test_a_cached_create_refreshes_only_the_trigger_config(seen):
    first, again = seen["create"]["session"], seen["createAgain"]["session"]

    assert again["triggerConfig"] == {"basePayload": {"chatId": f"chat-{seen['run']}", "turn": 2}}
    for unchanged in ("type", "taskIdentifier", "tags", "metadata", "expiresAt"):
        assert again[unchanged] == first[unchanged]


def test_retrieve_finds_the_session_by_either_id_with_the_secret_key_or_its_token(seen):
    retrieved = seen["retrieve"]

    assert retrieved["secretById"]["id"] == seen["create"]["session"]["id"]
    assert retrieved["secretById"] == seen["createAgain"]["session"]
    assert retrieved["secretByExternalId"] == retrieved["secretById"]
    assert retrieved["tokenById"] == retrieved["secretById"]
    assert retrieved["tokenByExternalId"] == retrieved["secretById"]


def test_retrieving_an_unknown_session_is_a_404_the_client_does_not_retry(seen):
    missing = seen["retrieveMissing"]

    assert (missing["name"], missing["status"], missing["message"]) == ("NotFoundError", 404, "Not found")
    assert (missing["shouldRetry"], missing["attempts"]) == ("false", 1)


def test_update_replaces_tags_and_metadata_and_a_retrieve_sees_them(seen):
    returned, reread = seen["update"]["returned"], seen["update"]["reread"]

    assert returned["tags"] == ["alpha", "beta"]
    assert returned["metadata"] == {"owner": "compat", "n": 2, "nested": {"ok": True}}
    assert returned["updatedAt"] > seen["createAgain"]["session"]["updatedAt"]
    assert reread == returned


def test_the_session_token_may_neither_update_nor_close(seen):
    for refused in (seen["updateWithToken"], seen["closeWithToken"]):
        assert (refused["name"], refused["status"]) == ("PermissionDeniedError", 403)
        assert refused["message"].startswith("Unauthorized: ")
        assert (refused["shouldRetry"], refused["attempts"]) == ("false", 1)


def test_listing_with_no_filter_returns_every_session_newest_first(seen):
    ids = _ids(seen)

    assert seen["filters"]["all"] == ids["newest_first"]
    assert len(set(seen["filters"]["all"])) == 29


def test_type_tag_task_and_external_id_filters_select_exactly_their_sessions(seen):
    ids, filters = _ids(seen), seen["filters"]
    even_pages = ids["pages"][0::2]

    assert filters["typePage"] == _newest_first(seen, ids["pages"])
    assert filters["tagAlpha"] == [ids["main"]]
    assert filters["tagEven"] == _newest_first(seen, even_pages)
    assert filters["taskAgent"] == [ids["main"]]
    assert filters["taskPager"] == _newest_first(seen, [*ids["pages"], *ids["late"]])
    assert filters["externalId"] == [ids["main"]]
    assert filters["externalIdUnknown"] == []


def test_multi_value_filters_go_comma_joined_and_match_any_value(seen):
    ids, filters = _ids(seen), seen["filters"]

    assert filters["typePageAndLate"] == _newest_first(seen, [*ids["pages"], *ids["late"]])
    assert filters["tagBetaOrLate"] == _newest_first(seen, [ids["main"], *ids["late"]])
    assert filters["taskBoth"] == ids["newest_first"]
    assert filters["statusActiveClosed"] == [i for i in ids["newest_first"] if i != ids["expired"]]
    sent = "\n".join(seen["pageQueries"])
    for joined in ("filter%5Btype%5D=page%2Clate", "filter%5Bstatus%5D=ACTIVE%2CCLOSED"):
        assert joined in sent


def test_status_filters_follow_the_derived_status(seen):
    ids, filters = _ids(seen), seen["filters"]
    open_ids = [i for i in ids["newest_first"] if i not in {ids["expired"], *ids["closed"]}]

    assert filters["statusActive"] == open_ids
    assert filters["statusClosed"] == _newest_first(seen, ids["closed"])
    assert filters["statusExpired"] == [ids["expired"]]
    assert filters["pagesClosedOnly"] == _newest_first(seen, ids["closed"])


def test_created_at_period_from_and_to_filters_split_at_the_mark(seen):
    ids, filters = _ids(seen), seen["filters"]

    assert filters["periodHour"] == ids["newest_first"]
    assert filters["fromMark"] == _newest_first(seen, ids["late"])
    assert filters["toMark"] == _newest_first(seen, [ids["main"], *ids["pages"]])
    assert filters["fromT0ToMark"] == _newest_first(seen, ids["pages"])


def test_listed_items_parse_with_null_fields_present_and_no_trigger_config(seen):
    listed = seen["listItem"]
    retrieved = seen["update"]["reread"]

    assert "triggerConfig" not in listed
    assert listed == {k: v for k, v in retrieved.items() if k != "triggerConfig"}


def test_paging_forward_with_get_next_page_visits_every_session_once(seen):
    p1, p2, p3 = seen["forward"]

    assert [len(p["ids"]) for p in (p1, p2, p3)] == [10, 10, 5]
    assert p1["ids"] + p2["ids"] + p3["ids"] == _newest_first(seen, _ids(seen)["pages"])
    assert [(p["hasPrevious"], p["hasNext"]) for p in (p1, p2, p3)] == [
        (False, True),
        (True, True),
        (True, False),
    ]


def test_paging_backward_from_a_before_cursor_returns_the_same_pages(seen):
    p1, p2, p3 = seen["forward"]
    b2, b1 = seen["backward"]

    assert b2["ids"] == p2["ids"]
    assert b1["ids"] == p1["ids"]
    assert (b1["hasPrevious"], b1["hasNext"]) == (False, True)
    assert seen["forwardFromBackward"]["ids"] == p3["ids"]


def test_get_previous_page_after_get_next_page_is_refused_for_sending_both_cursors(seen):
    refused = seen["bothCursors"]

    assert (refused["name"], refused["status"]) == ("BadRequestError", 400)
    assert refused["message"] == "Cannot pass both page[after] and page[before] on the same request"
    assert (refused["shouldRetry"], refused["attempts"]) == ("false", 1)


def test_close_is_idempotent_and_keeps_the_first_closed_at_and_reason(seen):
    closed = seen["close"]

    assert closed["closedAt"] is not None
    assert closed["closedReason"] == "done"
    assert closed["tags"] == ["alpha", "beta"]
    assert seen["closeAgain"] == closed
    assert seen["closeAgainDefaultBody"] == closed


def test_a_session_prefixed_external_id_is_a_422_the_client_does_not_retry(seen):
    refused = seen["reservedPrefix"]

    assert (refused["name"], refused["status"]) == ("UnprocessableEntityError", 422)
    assert "externalId cannot start with 'session_'" in refused["message"]
    assert (refused["shouldRetry"], refused["attempts"]) == ("false", 1)


def test_re_creating_a_closed_external_id_is_a_409_the_client_does_not_retry(seen):
    refused = seen["recreateClosed"]

    assert (refused["name"], refused["status"]) == ("ConflictError", 409)
    assert refused["message"] == "Session is closed; use a different externalId to create a new session"
    assert (refused["shouldRetry"], refused["attempts"]) == ("false", 1)


def test_creating_an_already_expired_session_is_a_409_the_client_does_not_retry(seen):
    refused = seen["createExpired"]

    assert (refused["name"], refused["status"]) == ("ConflictError", 409)
    assert refused["message"] == "Session is expired; use a different externalId to create a new session"
    assert (refused["shouldRetry"], refused["attempts"]) == ("false", 1)


def test_no_request_in_the_whole_run_got_a_server_error(seen):
    assert seen["serverErrors"] == []
