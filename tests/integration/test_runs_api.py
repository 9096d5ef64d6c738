"""Runs, run tokens, the records POST, JWT claims and the end marker, in-process on SQLite and PostgreSQL."""

import json
import threading

import pytest
import sqlalchemy as sa

from session_core.channels.group_commit import GroupCommit
from session_core.db.tables import session_runs
from session_core.db.uow import UnitOfWork
from session_core.models import Environment, EnvironmentType, utcnow
from session_core.scopes import Principal, PrincipalKind
from session_core.services import channels as channel_service
from session_core.services.environments import create_environment
from tests.integration.sessions_api import bearer, session_body

RUN_ITEM_KEYS = {
    "id", "sessionId", "status", "reason", "createdAt", "startedAt", "endedAt", "leaseExpiresAt",
    "output", "error",
}  # fmt: skip


def channel(ref, io):
    return f"/realtime/v1/sessions/{ref}/{io}"


def heartbeat(client, run_id, token):
    return client.post(f"/api/v1/runs/{run_id}/heartbeat", json={}, headers=bearer(token))


def run_token(client, env, run_id):
    response = heartbeat(client, run_id, env.api_key)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["token"]


def expire(engine, run_id):
    """Move a run's lease into the past, as if its agent had stopped heartbeating long ago."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(session_runs)
            .where(session_runs.c.run_id == run_id)
            .values(lease_expires_at=utcnow().replace(year=2020))
        )


def test_a_new_session_has_a_queued_run_with_a_lease(client, env, make_session):
    created = make_session()

    response = client.get(f"/api/v1/runs/{created['runId']}", headers=bearer(env.api_key))

    run = response.get_json()
    assert response.status_code == 200
    assert set(run) == RUN_ITEM_KEYS
    assert (run["id"], run["sessionId"], run["status"], run["reason"]) == (
        created["runId"],
        created["id"],
        "QUEUED",
        "initial",
    )
    assert run["leaseExpiresAt"] > run["createdAt"] and run["startedAt"] is None


def test_heartbeats_start_the_run_and_hand_out_fresh_run_tokens(client, env, make_session):
    run_id = make_session()["runId"]

    first = heartbeat(client, run_id, env.api_key).get_json()
    second = heartbeat(client, run_id, first["token"])

    body = second.get_json()
    assert second.status_code == 200
    assert (first["status"], body["status"], body["leaseSeconds"]) == ("EXECUTING", "EXECUTING", 30)
    assert body["startedAt"] == first["startedAt"] and body["leaseExpiresAt"] >= first["leaseExpiresAt"]
    assert client.get(f"/api/v1/runs/{run_id}", headers=bearer(body["token"])).status_code == 200


def test_complete_and_fail_end_runs_and_a_final_run_refuses_heartbeats(client, env, make_session):
    done, failed = make_session()["runId"], make_session()["runId"]

    completed = client.post(
        f"/api/v1/runs/{done}/complete", json={"output": {"turns": 2}}, headers=bearer(env.api_key)
    )
    token = run_token(client, env, failed)
    failure = client.post(
        f"/api/v1/runs/{failed}/fail", json={"error": {"message": "boom"}}, headers=bearer(token)
    )
    late = heartbeat(client, done, env.api_key)
    again = client.post(f"/api/v1/runs/{failed}/complete", headers=bearer(env.api_key))

    assert (completed.status_code, completed.get_json()["status"]) == (200, "COMPLETED")
    assert completed.get_json()["output"] == {"turns": 2} and completed.get_json()["endedAt"] is not None
    assert (failure.status_code, failure.get_json()["error"]) == (200, {"message": "boom"})
    assert late.status_code == 409
    assert late.get_json() == {"error": "Run is COMPLETED", "code": "run_final"}
    assert late.headers["x-should-retry"] == "false"
    assert (again.status_code, again.get_json()["error"]) == (409, "Run is FAILED")


def test_an_expired_run_is_not_live_and_the_next_in_append_starts_one_new_run(
    client, env, engine, make_session
):
    created = make_session()
    expire(engine, created["runId"])

    expired = client.get(f"/api/v1/runs/{created['runId']}", headers=bearer(env.api_key)).get_json()
    refused = heartbeat(client, created["runId"], env.api_key)
    out = client.post(channel(created["id"], "out") + "/append", data="x", headers=bearer(env.api_key))
    after_out = client.get(f"/api/v1/sessions/{created['id']}/runs", headers=bearer(env.api_key)).get_json()
    for text in ("one", "two"):
        client.post(channel(created["id"], "in") + "/append", data=text, headers=bearer(env.api_key))
    runs = client.get(f"/api/v1/sessions/{created['id']}/runs", headers=bearer(env.api_key)).get_json()[
        "data"
    ]
    session = client.get(f"/api/v1/sessions/{created['id']}", headers=bearer(env.api_key)).get_json()

    assert expired["status"] == "EXPIRED" and refused.get_json()["error"] == "Run is EXPIRED"
    assert out.status_code == 200 and len(after_out["data"]) == 1  # only `.in` starts runs
    assert [(r["status"], r["reason"]) for r in runs] == [("QUEUED", "continuation"), ("EXPIRED", "initial")]
    assert session["currentRunId"] == runs[0]["id"]


@pytest.mark.postgres
def test_concurrent_in_appends_after_expiry_start_exactly_one_run(make_pg_database):
    from session_core.db.engine import make_engine
    from session_core.db.migrate import upgrade_database
    from session_core.services.runs import RecordingLauncher
    from session_core.services.sessions import create_session

    url = make_pg_database()
    upgrade_database(url)
    engine = make_engine(url)
    try:
        env = create_environment(UnitOfWork(engine), "race", EnvironmentType.DEVELOPMENT, utcnow())
        principal = Principal(env, PrincipalKind.PRIVATE)
        launcher = RecordingLauncher()
        body = {
            "type": "chat.agent",
            "task_identifier": "agent",
            "trigger_config": {},
            "external_id": "chat-race",
        }
        for _ in range(3):  # a few rounds: each expires the run and races 12 appenders
            created = create_session(UnitOfWork(engine), launcher, principal, body, utcnow())
            expire(engine, created.run_id)
            barrier = threading.Barrier(12, timeout=30)

            def write(n, barrier=barrier):
                barrier.wait()
                # a GroupCommit each: as if every append came through another process
                channel_service.append_to_channel(
                    UnitOfWork(engine),
                    launcher,
                    GroupCommit(),
                    "chat-race",
                    "in",
                    channel_service.ChannelAppend(principal, str(n), None, utcnow()),
                    300,
                )

            threads = [threading.Thread(target=write, args=(n,)) for n in range(12)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        with engine.connect() as conn:
            reasons = [row.reason for row in conn.execute(sa.select(session_runs.c.reason))]
    finally:
        engine.dispose()

    assert sorted(reasons) == ["continuation"] * 3 + ["initial"]


def test_a_run_token_reaches_its_session_channels_and_its_run_only(
    client, env, make_session, make_environment
):
    mine, other = make_session(), make_session()
    token = run_token(client, env, mine["runId"])
    other_token = run_token(client, env, other["runId"])
    stranger: Environment = make_environment()
    auth = bearer(token)

    allowed = [
        client.post(channel(mine["id"], "in") + "/append", data="hi", headers=auth),
        client.post(channel(mine["id"], "out") + "/append", data="hello", headers=auth),
        client.post(
            channel(mine["externalId"], "out") + "/records", json={"records": [{"data": 1}]}, headers=auth
        ),
        client.put(channel(mine["id"], "out"), headers=auth),
        client.get(channel(mine["id"], "in") + "/records", headers=auth),
        client.get(channel(mine["id"], "out") + "/records", headers=auth),
        client.get(f"/api/v1/runs/{mine['runId']}", headers=auth),
        heartbeat(client, mine["runId"], token),
    ]
    refused = [
        client.post(channel(other["id"], "in") + "/append", data="hi", headers=auth),
        client.post(channel(other["id"], "out") + "/records", json={"records": [{"data": 1}]}, headers=auth),
        client.get(channel(other["id"], "in") + "/records", headers=auth),
        client.put(channel(other["id"], "out"), headers=auth),
        heartbeat(client, other["runId"], token),
        client.get(f"/api/v1/runs/{other['runId']}", headers=auth),
        client.post(f"/api/v1/runs/{mine['runId']}/complete", headers=bearer(other_token)),
        client.patch(f"/api/v1/sessions/{mine['id']}", json={"tags": ["x"]}, headers=auth),
        client.post(f"/api/v1/sessions/{mine['id']}/close", json={}, headers=auth),
        client.post("/api/v1/sessions", json=session_body(), headers=auth),
        client.get("/api/v1/sessions", headers=auth),
    ]
    other_environment = client.get(f"/api/v1/runs/{mine['runId']}", headers=bearer(stranger.api_key))
    claims = client.post("/api/v1/auth/jwt/claims", headers=auth)

    assert [r.status_code for r in allowed] == [200, 200, 200, 202, 200, 200, 200, 200]
    assert [r.status_code for r in refused] == [403] * 11
    assert other_environment.status_code == 404
    assert claims.status_code == 401


def test_a_session_token_may_not_write_out_or_act_on_runs(client, env, make_session):
    created = make_session()
    auth = bearer(created["publicAccessToken"])

    out = client.post(
        channel(created["id"], "out") + "/records", json={"records": [{"data": 1}]}, headers=auth
    )
    beat = heartbeat(client, created["runId"], created["publicAccessToken"])
    runs = client.get(f"/api/v1/sessions/{created['id']}/runs", headers=auth)

    assert (out.status_code, beat.status_code, runs.status_code) == (403, 403, 200)


def test_jwt_claims_answer_a_secret_key_with_the_environment(client, env):
    response = client.post("/api/v1/auth/jwt/claims", headers=bearer(env.api_key))

    assert response.status_code == 200
    assert response.get_json() == {"sub": env.id, "pub": True}
    assert client.post("/api/v1/auth/jwt/claims").status_code == 401


def test_records_post_writes_data_control_and_trim_and_de_duplicates(client, env, make_session):
    ref = make_session()["id"]
    auth = bearer(env.api_key)
    turn = {
        "records": [
            {"data": {"type": "text-delta", "delta": "Hi"}, "id": "p1"},
            {"headers": [["trigger-control", "turn-complete"], ["session-in-event-id", "0"]]},
        ]
    }

    first = client.post(channel(ref, "out") + "/records", json=turn, headers={**auth, "X-Part-Id": "t1"})
    retried = client.post(channel(ref, "out") + "/records", json=turn, headers={**auth, "X-Part-Id": "t1"})
    second = client.post(
        channel(ref, "out") + "/records",
        json={"records": [{"data": {"type": "text-delta", "delta": "Again"}}], "trimBefore": 2},
        headers=auth,
    )
    stored = client.get(channel(ref, "out") + "/records", headers=auth).get_json()["records"]

    assert first.get_json() == {"ok": True, "seqNums": [0, 1]} and retried.get_json() == first.get_json()
    assert second.get_json() == {"ok": True, "seqNums": [2]}
    assert [(r["seqNum"], r["data"]) for r in stored] == [(2, {"type": "text-delta", "delta": "Again"})]


def test_records_post_refuses_bad_bodies_and_closed_sessions(client, env, make_session):
    ref = make_session()["id"]
    auth = bearer(env.api_key)

    bad = client.post(channel(ref, "in") + "/records", json={"records": [{}]}, headers=auth)
    empty = client.post(channel(ref, "in") + "/records", data=b"", headers=auth)
    client.post(f"/api/v1/sessions/{ref}/close", json={}, headers=auth)
    closed = client.post(channel(ref, "in") + "/records", json={"records": [{"data": 1}]}, headers=auth)
    missing = client.post(
        channel("session_nobody", "in") + "/records", json={"records": [{"data": 1}]}, headers=auth
    )

    assert bad.status_code == 422 and bad.get_json()["ok"] is False
    assert empty.status_code in (400, 413)
    assert (closed.status_code, closed.get_json()["error"]) == (400, "Cannot append to a closed session")
    assert missing.status_code == 404


def test_close_writes_one_marker_to_each_channel_readable_as_records(client, env, make_session):
    created = make_session()
    ref = created["externalId"]
    auth = bearer(env.api_key)
    client.post(channel(ref, "in") + "/append", data="hi", headers=auth)

    client.post(f"/api/v1/sessions/{ref}/close", json={"reason": "user left"}, headers=auth)
    client.post(f"/api/v1/sessions/{ref}/close", json={"reason": "again"}, headers=auth)

    marker = [["trigger-control", "session-closed"], ["session-closed-reason", "user left"]]
    stored_in = client.get(channel(ref, "in") + "/records", headers=auth).get_json()["records"]
    stored_out = client.get(channel(ref, "out") + "/records", headers=auth).get_json()["records"]
    assert [(r["data"], r.get("headers")) for r in stored_in] == [("hi", None), ("", marker)]
    assert [(r["data"], r["headers"]) for r in stored_out] == [("", marker)]
    live = client.get(channel(ref, "out"), headers={**auth, "Timeout-Seconds": "30"})
    batches = [b for b in live.get_data(as_text=True).split("\n\n") if b.startswith("event: batch")]
    assert [json.loads(b.split("data: ", 1)[1])["records"][-1]["headers"] for b in batches] == [marker]


def test_openapi_describes_the_run_routes(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]

    for path in (
        "/api/v1/runs/{runId}",
        "/api/v1/runs/{runId}/heartbeat",
        "/api/v1/runs/{runId}/complete",
        "/api/v1/runs/{runId}/fail",
        "/api/v1/sessions/{session_ref}/runs",
        "/api/v1/auth/jwt/claims",
    ):
        assert path in paths, path
