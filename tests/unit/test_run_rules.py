"""Pure rules of runs, records and the end-of-session marker."""

from datetime import datetime, timedelta

import pytest

from session_core.config import ConfigError, Settings
from session_core.envelopes import records_from_wire
from session_core.errors import InvalidInput
from session_core.models import ChannelRecord, RunReason, RunStatus, SessionRun, is_run_live, run_status
from session_core.services.markers import is_session_closed_record, session_closed_headers
from session_core.services.runs import launch_id
from session_web.sse import through_close

NOW = datetime(2026, 12, 3, 12, 0, 0)


def run(status=RunStatus.QUEUED, lease=None):
    return SessionRun("c1", "s1", "run_c1", RunReason.INITIAL, NOW, status=status, lease_expires_at=lease)


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.EXECUTING])
def test_a_running_run_within_its_lease_keeps_its_status(status):
    assert run_status(run(status, NOW + timedelta(seconds=1)), NOW) is status
    assert run_status(run(status, NOW), NOW) is status  # the lease's last instant still counts


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.EXECUTING])
def test_a_running_run_whose_lease_lapsed_is_expired(status):
    assert run_status(run(status, NOW - timedelta(milliseconds=1)), NOW) is RunStatus.EXPIRED


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
def test_a_final_status_stays_whatever_the_lease_says(status):
    assert run_status(run(status, NOW - timedelta(hours=1)), NOW) is status
    assert not is_run_live(run(status, NOW + timedelta(hours=1)), NOW)


def test_a_run_without_a_lease_never_expires_and_no_run_is_not_live():
    assert run_status(run(lease=None), NOW + timedelta(days=365)) is RunStatus.QUEUED
    assert is_run_live(run(lease=None), NOW)
    assert not is_run_live(None, NOW)


def test_a_launch_id_is_stable_per_run():
    assert launch_id("run_abc") == launch_id("run_abc") == "msg_abc"
    assert launch_id("run_abc") != launch_id("run_abd")


def test_records_become_envelopes_control_records_and_a_trim_point():
    records, trim = records_from_wire(
        {
            "records": [
                {"data": {"type": "text-delta", "delta": "hé"}, "id": "p1"},
                {"data": "plain"},
                {"headers": [["trigger-control", "turn-complete"], ["session-in-event-id", "7"]]},
            ],
            "trimBefore": 3,
        },
        1024,
    )

    assert records[0].body == '{"data":{"type":"text-delta","delta":"hé"},"id":"p1"}'
    assert records[1].body.startswith('{"data":"plain","id":"') and len(records[1].body) == 31
    assert records[2].body == "" and records[2].headers == [
        ["trigger-control", "turn-complete"],
        ["session-in-event-id", "7"],
    ]
    assert trim == 3


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"records": []},
        {"records": "x"},
        {"records": [{}]},
        {"records": [1]},
        {"records": [{"data": 1, "headers": [["", "trim"]]}]},
        {"records": [{"data": 1, "headers": [["a"]]}]},
        {"records": [{"data": 1, "id": 5}]},
        {"records": [{"data": 1, "id": "x" * 257}]},
        {"records": [{"data": 1}], "trimBefore": -1},
        {"records": [{"data": 1}], "trimBefore": True},
        {"records": [{"data": 1}] * 1001},
        {"records": [{"data": "x" * 2000}]},
    ],
)
def test_malformed_records_bodies_are_refused(body):
    with pytest.raises(InvalidInput):
        records_from_wire(body, 1024)


def test_the_marker_has_the_wire_form_and_is_recognised():
    marker = ChannelRecord(4, 0, "", session_closed_headers(None))

    assert marker.headers == [["trigger-control", "session-closed"], ["session-closed-reason", ""]]
    assert session_closed_headers("bye")[1] == ["session-closed-reason", "bye"]
    assert is_session_closed_record(marker)
    assert not is_session_closed_record(ChannelRecord(5, 0, '{"data":1}', session_closed_headers(None)))
    turn = ChannelRecord(3, 0, "", [["trigger-control", "turn-complete"]])
    data = ChannelRecord(2, 0, '{"data":"x","id":"a"}')
    assert through_close([data, turn, marker, data]) == [data, turn, marker]
    assert through_close([data, turn]) is None


def test_run_settings_come_from_the_environment_and_name_a_bad_variable():
    settings = Settings.from_env(
        {
            "SESSIONS_RUN_LEASE_SECONDS": "5",
            "SESSIONS_RUN_LAUNCHER": "webhook",
            "SESSIONS_WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "SESSIONS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }
    )
    assert (settings.run_lease_seconds, settings.run_launcher) == (5, "webhook")
    assert Settings.from_env({}).run_launcher == "record"
    assert Settings.from_env({}).run_lease_seconds == 30
    for environ, name in [
        ({"SESSIONS_RUN_LEASE_SECONDS": "0"}, "SESSIONS_RUN_LEASE_SECONDS"),
        ({"SESSIONS_RUN_LAUNCHER": "lambda"}, "SESSIONS_RUN_LAUNCHER"),
        ({"SESSIONS_RUN_LAUNCHER": "webhook"}, "SESSIONS_WEBHOOK_URL"),
        (
            {
                "SESSIONS_RUN_LAUNCHER": "webhook",
                "SESSIONS_WEBHOOK_URL": "http://h/",
                "SESSIONS_WEBHOOK_SECRET": "x",
            },
            "SESSIONS_WEBHOOK_SECRET",
        ),
        ({"SESSIONS_RUN_LAUNCHER": "celery"}, "CELERY_BROKER_URL"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(environ)
