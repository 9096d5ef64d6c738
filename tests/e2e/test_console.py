"""The web console in Debian's chromium (headless, via Playwright) against gunicorn on PostgreSQL.

One browser and one server for the module; each test gets a fresh browser context (an empty
``sessionStorage``) and sessions of its own. Live updates are awaited with Playwright's ``expect``
and a timeout, never with sleeps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Page, expect, sync_playwright

from session_web.console import CONTENT_SECURITY_POLICY
from tests.e2e.console_browser import launch_chromium
from tests.servers import LiveServer

pytestmark = pytest.mark.postgres

#: The issue's bar for a live record: on the page within a second of the append's answer.
LIVE_MS = 1_000
#: A restarted server takes seconds to come back; the tail reconnects with backoff.
RESTART_MS = 30_000


@pytest.fixture(scope="module")
def server(postgres) -> Iterator[LiveServer]:
    with LiveServer(postgres.database_url(postgres.create_database()), workers=1) as live:
        yield live


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


class Api:
    """The public API with one environment's secret key, as a program beside the console uses it."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base = base_url
        self.key = key
        self.auth = {"Authorization": f"Bearer {key}"}
        self.http = requests.Session()

    def create(self, **fields) -> dict:
        body = {
            "type": "chat.agent",
            "taskIdentifier": "agent",
            "triggerConfig": {"basePayload": {}},
            **fields,
        }
        response = self.http.post(f"{self.base}/api/v1/sessions", json=body, headers=self.auth, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, ref: str) -> dict:
        response = self.http.get(f"{self.base}/api/v1/sessions/{ref}", headers=self.auth, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def close(self, ref: str) -> None:
        response = self.http.post(
            f"{self.base}/api/v1/sessions/{ref}/close", json={}, headers=self.auth, timeout=10
        )
        assert response.status_code == 200, response.text

    def append(self, ref: str, io: str, body: str) -> int:
        url = f"{self.base}/realtime/v1/sessions/{ref}/{io}/append"
        response = self.http.post(url, data=body.encode(), headers=self.auth, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["seq"]

    def s2_append(self, ref: str, io: str, records: list[dict]) -> None:
        """Append raw S2 records (control and command records) through the S2 endpoint."""
        grant = self.http.put(f"{self.base}/realtime/v1/sessions/{ref}/{io}", headers=self.auth, timeout=10)
        assert grant.status_code == 202, grant.text
        stream = requests.utils.quote(grant.headers["X-S2-Stream-Name"], safe="")
        auth = {"Authorization": f"Bearer {grant.headers['X-S2-Access-Token']}", "s2-basin": "sessions"}
        url = f"{grant.headers['X-S2-Endpoint']}/streams/{stream}/records"
        response = self.http.post(url, json={"records": records}, headers=auth, timeout=10)
        assert response.status_code == 200, response.text

    def records(self, ref: str, io: str) -> list[dict]:
        url = f"{self.base}/realtime/v1/sessions/{ref}/{io}/records"
        response = self.http.get(url, headers=self.auth, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["records"]


@pytest.fixture(scope="module")
def api(server: LiveServer) -> Api:
    return Api(server.base_url, server.create_env(f"console-{uuid.uuid4().hex[:8]}")["apiKey"])


@pytest.fixture
def tab(chromium, server: LiveServer) -> Iterator[Page]:
    context = chromium.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def sign_in(page: Page, key: str) -> None:
    page.goto("/sign-in")
    page.get_by_label("Secret API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sessions")).to_be_visible()


def records(page: Page, io: str):
    return page.locator(f"#channel-{io} li.record")


def test_sign_in_keeps_the_key_in_the_tab_only(tab, api):
    session = api.create(tags=["signed-in"])

    sign_in(tab, api.key)

    expect(tab.locator(f'tr[data-session="{session["id"]}"]')).to_be_visible()
    assert tab.evaluate("sessionStorage.getItem('sessions.apiKey')") == api.key
    assert tab.context.cookies() == []
    tab.get_by_role("button", name="Sign out").click()
    expect(tab).to_have_url(f"{api.base}/sign-in")
    assert tab.evaluate("sessionStorage.length") == 0
    tab.goto("/")
    expect(tab).to_have_url(f"{api.base}/sign-in")


def test_a_wrong_key_is_refused(tab, api):
    tab.goto("/sign-in")
    tab.get_by_label("Secret API key").fill("tr_dev_not-a-real-key")
    tab.get_by_role("button", name="Sign in").click()

    expect(tab.get_by_role("alert")).to_have_text("That API key was refused. Check it and try again.")
    expect(tab).to_have_url(f"{api.base}/sign-in")
    assert tab.evaluate("sessionStorage.length") == 0


def test_filter_the_list_and_page_forward_and_back_across_60_sessions(tab, server):
    api = Api(server.base_url, server.create_env(f"paging-{uuid.uuid4().hex[:8]}")["apiKey"])
    created = [api.create(type="paged", tags=[f"n{i % 3}"])["id"] for i in range(60)]
    api.create(type="other")
    for ref in created[:5]:
        api.close(ref)
    newest_first = created[::-1]
    rows = tab.locator("#session-rows tr")

    def shown() -> list[str]:
        expect(rows.first).to_be_visible()
        return rows.evaluate_all("rows => rows.map(row => row.dataset.session)")

    sign_in(tab, api.key)
    tab.get_by_label("Type").fill("paged")
    tab.get_by_role("button", name="Filter").click()
    expect(tab).to_have_url(f"{api.base}/?type=paged&tag=&task=&externalId=&status=&period=")
    first = shown()
    assert first == newest_first[:20]
    expect(tab.get_by_role("link", name="← Newer")).to_be_hidden()
    tab.get_by_role("link", name="Older →").click()
    expect(rows.first).to_have_attribute("data-session", newest_first[20])
    assert shown() == newest_first[20:40]
    tab.get_by_role("link", name="Older →").click()
    expect(rows.first).to_have_attribute("data-session", newest_first[40])
    assert shown() == newest_first[40:60]
    expect(tab.get_by_role("link", name="Older →")).to_be_hidden()
    tab.get_by_role("link", name="← Newer").click()
    expect(rows.first).to_have_attribute("data-session", newest_first[20])
    assert shown() == newest_first[20:40]
    tab.get_by_role("link", name="← Newer").click()
    expect(rows.first).to_have_attribute("data-session", newest_first[0])
    assert shown() == newest_first[:20]
    expect(tab.get_by_role("link", name="← Newer")).to_be_hidden()

    tab.get_by_label("Status").select_option("CLOSED")
    tab.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(5)
    assert shown() == created[:5][::-1]
    expect(rows.locator(".badge")).to_have_text(["CLOSED"] * 5)
    tab.get_by_label("Status").select_option("")
    tab.get_by_label("Tag").fill("n1")
    tab.get_by_label("Created in the last").select_option("1h")
    tab.get_by_role("button", name="Filter").click()
    expect(rows.first).to_have_attribute("data-session", newest_first[1])
    assert shown() == [ref for i, ref in enumerate(created) if i % 3 == 1][::-1][:20]


def test_the_session_page_tails_both_channels_live(tab, api):
    session = api.create(
        tags=["live", "demo"], metadata={"customer": "acme"}, externalId=f"chat-{uuid.uuid4()}"
    )
    ref = session["id"]
    api.append(ref, "out", "before the page opened")
    sign_in(tab, api.key)

    tab.goto(f"/sessions/{ref}")

    expect(tab.locator("#session-status")).to_have_text("ACTIVE")
    expect(tab.locator("#session-tags .tag")).to_have_text(["live", "demo"])
    expect(tab.locator("#session-metadata")).to_contain_text('"customer": "acme"')
    expect(tab.locator("#session-fields")).to_contain_text(session["externalId"])
    expect(records(tab, "out")).to_contain_text(["before the page opened"])
    expect(records(tab, "out").first.locator(".seq")).to_have_text("#0")
    expect(tab.locator("#channel-in [data-state]")).to_have_text("live")
    expect(tab.locator("#channel-out [data-state]")).to_have_text("live")

    api.append(ref, "out", '{"type":"text-delta","delta":"hello"}')
    expect(records(tab, "out").nth(1)).to_contain_text('"delta":"hello"', timeout=LIVE_MS)
    api.append(ref, "in", "a message from the user")
    expect(records(tab, "in").first).to_contain_text("a message from the user", timeout=LIVE_MS)

    api.s2_append(
        ref, "out", [{"headers": [["trigger-control", "turn-complete"], ["session-in-event-id", "0"]]}]
    )
    api.s2_append(ref, "out", [{"headers": [["", "fence"]], "body": "writer-2"}])
    expect(records(tab, "out")).to_have_count(4, timeout=LIVE_MS)
    kinds = records(tab, "out").evaluate_all("items => items.map(item => item.dataset.kind)")
    assert kinds == ["data", "data", "control", "command"]
    expect(records(tab, "out").nth(2).locator(".kind")).to_have_text("turn-complete")
    expect(records(tab, "out").nth(2)).to_contain_text("session-in-event-id: 0")
    expect(records(tab, "out").nth(3).locator(".kind")).to_have_text("fence")


def test_the_latest_records_start_near_the_tail(tab, api):
    ref = api.create()["id"]
    for i in range(55):
        api.append(ref, "out", f"record {i}")
    sign_in(tab, api.key)
    tab.goto(f"/sessions/{ref}")
    expect(records(tab, "out")).to_have_count(55)

    tab.get_by_label("Start").select_option("latest")

    expect(records(tab, "out")).to_have_count(50)
    expect(records(tab, "out").first).to_contain_text("record 5")
    api.append(ref, "out", "record 55")
    expect(records(tab, "out")).to_have_count(51, timeout=LIVE_MS)


def test_send_a_message_to_in_from_the_page(tab, api):
    ref = api.create()["id"]
    sign_in(tab, api.key)
    tab.goto(f"/sessions/{ref}")
    expect(tab.locator("#channel-in [data-state]")).to_have_text("live")

    tab.get_by_label("Send a message to .in").fill('{"type":"user","text":"hi from the console"}')
    tab.get_by_role("button", name="Send").click()

    expect(tab.locator("#send-status")).to_have_text("Sent as record #0.")
    expect(records(tab, "in")).to_contain_text(["hi from the console"], timeout=LIVE_MS)
    assert [(r["seqNum"], r["data"]) for r in api.records(ref, "in")] == [
        (0, '{"type":"user","text":"hi from the console"}')
    ]


def test_close_the_session_from_the_page(tab, api):
    ref = api.create()["id"]
    sign_in(tab, api.key)
    tab.goto(f"/sessions/{ref}")
    expect(tab.locator("#session-status")).to_have_text("ACTIVE")

    tab.get_by_label("Reason").fill("done from the console")
    tab.get_by_role("button", name="Close session").click()

    expect(tab.locator("#session-status")).to_have_text("CLOSED")
    expect(tab.get_by_role("button", name="Send")).to_be_disabled()
    closed = api.get(ref)
    assert closed["closedAt"] is not None and closed["closedReason"] == "done from the console"


def test_the_page_survives_a_server_restart_mid_tail_without_duplicates(tab, api, server):
    ref = api.create()["id"]
    api.append(ref, "out", "before the restart")
    api.append(ref, "in", "in before the restart")
    sign_in(tab, api.key)
    tab.goto(f"/sessions/{ref}")
    expect(records(tab, "out")).to_have_count(1)
    expect(records(tab, "in")).to_have_count(1)

    server.kill()
    server.start()
    api.append(ref, "out", "after the restart")
    api.append(ref, "in", "in after the restart")

    expect(records(tab, "out").nth(1)).to_contain_text("after the restart", timeout=RESTART_MS)
    expect(records(tab, "in").nth(1)).to_contain_text("in after the restart", timeout=RESTART_MS)
    api.append(ref, "out", "once more")
    expect(records(tab, "out")).to_have_count(3, timeout=LIVE_MS)
    seqs = records(tab, "out").evaluate_all("items => items.map(item => Number(item.dataset.seq))")
    assert seqs == [0, 1, 2]
    expect(records(tab, "in")).to_have_count(2)


def test_console_responses_carry_the_csp_and_no_url_holds_the_key(tab, api):
    ref = api.create()["id"]
    requested: list[str] = []
    console_responses = []
    violations: list[str] = []
    tab.on("request", lambda request: requested.append(request.url))
    tab.on(
        "response",
        lambda response: (
            console_responses.append(response)
            if not response.url.startswith((f"{api.base}/api/", f"{api.base}/realtime/"))
            else None
        ),
    )
    tab.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    sign_in(tab, api.key)
    tab.get_by_label("Type").fill("chat.agent")
    tab.get_by_role("button", name="Filter").click()
    tab.locator(f'a[href="/sessions/{ref}"]').click()
    tab.get_by_label("Send a message to .in").fill("hello")
    tab.get_by_role("button", name="Send").click()
    expect(records(tab, "in")).to_have_count(1, timeout=LIVE_MS)
    tab.get_by_role("button", name="Close session").click()
    expect(tab.locator("#session-status")).to_have_text("CLOSED")
    tab.get_by_role("button", name="Sign out").click()
    expect(tab).to_have_url(f"{api.base}/sign-in")

    paths = {response.url.removeprefix(api.base).split("?")[0] for response in console_responses}
    assert {
        "/sign-in",
        "/",
        f"/sessions/{ref}",
        "/console/static/session.js",
        "/console/static/console.css",
    } <= paths
    for response in console_responses:
        headers = response.all_headers()
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, response.url
        assert headers["x-content-type-options"] == "nosniff", response.url
        assert headers["referrer-policy"] == "no-referrer", response.url
    assert any(url.startswith(f"{api.base}/realtime/v1/sessions/{ref}/out") for url in requested)
    assert [url for url in requested if api.key in url or api.key.split("_")[-1] in url] == []
    assert violations == []


@pytest.mark.parametrize("path", ["/sign-in", "/", "/sessions/{ref}"])
def test_pages_fit_a_360px_screen_in_dark_mode(chromium, api, path):
    ref = api.create(metadata={"long": "x" * 300})["id"]
    api.append(ref, "out", json.dumps({"text": "y" * 500}))
    context = chromium.new_context(
        base_url=api.base, viewport={"width": 360, "height": 740}, color_scheme="dark"
    )
    try:
        tab = context.new_page()
        if path != "/sign-in":
            sign_in(tab, api.key)
        tab.goto(path.format(ref=ref))
        expect(tab.locator("main")).to_be_visible()
        if "{ref}" in path:
            expect(records(tab, "out")).to_have_count(1)
        else:
            expect(tab.locator("h1")).to_be_visible()
        assert tab.evaluate("document.documentElement.scrollWidth") <= 360
        background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 19, 22)"
    finally:
        context.close()


def test_the_session_page_lists_its_runs_with_their_status(tab, api):
    session = api.create()
    ref = session["id"]
    runs = api.http.get(f"{api.base}/api/v1/sessions/{ref}/runs", headers=api.auth, timeout=10).json()["data"]
    assert [run["id"] for run in runs] == [session["runId"]]
    completed = api.http.post(
        f"{api.base}/api/v1/runs/{session['runId']}/complete", json={}, headers=api.auth, timeout=10
    )
    assert completed.status_code == 200, completed.text
    sign_in(tab, api.key)

    tab.goto(f"/sessions/{ref}")

    row = tab.locator(f'#run-rows tr[data-run="{session["runId"]}"]')
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    expect(row).to_contain_text(completed.json()["reason"])
    expect(tab.locator("#runs-note")).to_be_hidden()
