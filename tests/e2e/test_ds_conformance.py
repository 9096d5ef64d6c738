"""The Durable Streams conformance suite (338 tests) against live servers on SQLite and PostgreSQL.

`js/ds_conformance.test.mjs` runs `@durable-streams/server-conformance-tests` under vitest with its
JSON reporter. This test starts `sessions serve` on each database in turn, with
`SESSIONS_DS_PUBLIC_ENVIRONMENT` (the suite sends no credentials) and a 500 ms long-poll, runs the
suite against it, and asserts the exact outcome: every test passes but the six opt-in subscription
tests, which the suite skips, and those named in `EXPECTED_FAILURES` (each listed, with its reason,
in the README).
"""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.servers import LiveServer

pytestmark = pytest.mark.postgres
JS = Path(__file__).parent / "js"
SUITE = JS / "node_modules" / "@durable-streams" / "server-conformance-tests"
TOTAL = 338
#: The opt-in subscription APIs (`runConformanceTests({subscriptions: true})`), which we do not serve.
SKIPPED_GROUP = "Reserved subscription APIs"
SKIPPED = 6
#: Tests that cannot pass by design, by full name; the README says why for each.
EXPECTED_FAILURES: set[str] = set()


def start_suite(base_url: str, report: Path) -> subprocess.Popen[str]:
    """Start the suite against `base_url`; vitest writes its JSON report to `report`."""
    return subprocess.Popen(
        ["node_modules/.bin/vitest", "run", "--config", "ds_conformance.config.mjs",
         "--reporter=json", f"--outputFile={report}"],
        cwd=JS, env={**os.environ, "CONFORMANCE_TEST_URL": base_url},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def outcomes(report: Path) -> dict[str, str]:
    """Each test's full name (its describe groups and title, joined by ` > `) and status."""
    return {
        " > ".join([*test["ancestorTitles"], test["title"]]): test["status"]
        for result in json.loads(report.read_text())["testResults"]
        for test in result["assertionResults"]
    }


def test_the_conformance_suite_passes_on_sqlite_and_postgres(postgres, tmp_path: Path):
    if shutil.which("node") is None or not SUITE.is_dir():
        pytest.fail("the suite is missing: install Node 20+ and run  npm ci --prefix tests/e2e/js")
    slug = f"ds-{uuid.uuid4().hex[:8]}"
    env = {"SESSIONS_DS_PUBLIC_ENVIRONMENT": slug, "SESSIONS_DS_LONG_POLL_MS": "500",
           # Idle keep-alive connections outlive the suite's slowest client-side checks (~10 s),
           # so its next request never lands on a socket the server is just closing.
           "SESSIONS_KEEPALIVE": "75"}  # fmt: skip
    databases = {
        "sqlite": f"sqlite:///{tmp_path}/ds.db",
        "postgres": postgres.database_url(postgres.create_database()),
    }
    seen: dict[str, dict[str, str]] = {}
    for name, url in databases.items():  # one at a time: the suite's SSE reads allow 2 s each
        with LiveServer(url, workers=2, env=env) as server:
            server.create_env(slug)
            run = start_suite(server.base_url, tmp_path / f"{name}.json")
            try:
                _, stderr = run.communicate(timeout=900)
            finally:
                run.kill()
            assert (tmp_path / f"{name}.json").exists(), stderr[-3000:] + server.log()
        seen[name] = outcomes(tmp_path / f"{name}.json")

    for name, tests in seen.items():
        assert len(tests) == TOTAL, name
        skipped = {test for test, status in tests.items() if status not in ("passed", "failed")}
        assert len(skipped) == SKIPPED and all(test.startswith(SKIPPED_GROUP) for test in skipped), skipped
    failed = {
        name: {test for test, status in tests.items() if status == "failed"} for name, tests in seen.items()
    }
    assert failed == {name: EXPECTED_FAILURES for name in databases}
