"""Take the console screenshots shown in the README: ``.venv/bin/python -m docs.screenshots``.

Starts the service on a throwaway SQLite file, fills one environment with sessions and channel
records, and photographs each page with Debian's chromium (headless) into ``docs/``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import requests
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.console_browser import launch_chromium
from tests.servers import LiveServer

DOCS = Path(__file__).resolve().parent


def _fill(base: str, key: str) -> str:
    """Create a few sessions with records on both channels; return the one to show."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {key}"

    def create(external_id: str, session_type: str, task: str, tags: list[str]) -> str:
        body = {
            "type": session_type,
            "taskIdentifier": task,
            "externalId": external_id,
            "tags": tags,
            "metadata": {"user": "ada@example.com", "plan": "pro"},
            "triggerConfig": {"basePayload": {"model": "gpt-5"}, "maxAttempts": 3},
        }
        response = http.post(f"{base}/api/v1/sessions", json=body, timeout=10)
        response.raise_for_status()
        return str(response.json()["id"])

    for n in range(6):
        ref = create(f"support-{n}", "support.agent", "support-agent", ["support", f"tier-{n % 2}"])
        if n % 3 == 0:
            http.post(f"{base}/api/v1/sessions/{ref}/close", json={"reason": "resolved"}, timeout=10)
    shown = create("chat-4711", "chat.agent", "chat-agent", ["chat", "beta"])
    append = f"{base}/realtime/v1/sessions/{shown}"
    http.post(
        f"{append}/in/append", data=json.dumps({"role": "user", "text": "What changed in v2?"}), timeout=10
    )
    for delta in ("v2 adds ", "live channels ", "and a console."):
        http.post(f"{append}/out/append", data=json.dumps({"type": "text-delta", "delta": delta}), timeout=10)
    grant = http.put(f"{append}/out", timeout=10)
    stream = requests.utils.quote(grant.headers["X-S2-Stream-Name"], safe="")
    s2 = f"{grant.headers['X-S2-Endpoint']}/streams/{stream}/records"
    s2_auth = {"Authorization": f"Bearer {grant.headers['X-S2-Access-Token']}", "s2-basin": "sessions"}
    control = {"headers": [["trigger-control", "turn-complete"], ["session-in-event-id", "0"]]}
    requests.post(
        s2, json={"records": [control, {"headers": [["", "fence"]], "body": "writer-2"}]}, headers=s2_auth
    )
    return shown


def _sign_in(page: Page, key: str) -> None:
    page.goto("/sign-in")
    page.get_by_label("Secret API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#session-rows tr").first).to_be_visible()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, LiveServer(f"sqlite:///{tmp}/sessions.db") as server:
        key = server.create_env("demo")["apiKey"]
        shown = _fill(server.base_url, key)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for scheme, width, suffix in (("light", 1200, ""), ("dark", 360, "-mobile-dark")):
                context = browser.new_context(
                    base_url=server.base_url, viewport={"width": width, "height": 860}, color_scheme=scheme
                )
                page = context.new_page()
                page.goto("/sign-in")
                page.get_by_label("Secret API key").fill(key)
                page.screenshot(path=DOCS / f"console-sign-in{suffix}.png")
                _sign_in(page, key)
                page.screenshot(path=DOCS / f"console-list{suffix}.png", full_page=True)
                page.goto(f"/sessions/{shown}")
                expect(page.locator("#channel-out li.record")).to_have_count(5)
                page.screenshot(path=DOCS / f"console-session{suffix}.png", full_page=True)
                context.close()
            browser.close()


if __name__ == "__main__":
    main()
