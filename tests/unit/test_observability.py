"""Pure parts of logs, metrics and settings: request ids, route templates, JSON lines, variables."""

import json
import logging

import pytest
from prometheus_client import REGISTRY

from session_core.config import ConfigError, Settings
from session_core.logs import JsonFormatter, configure_logging
from session_web import metrics, metrics_dir
from session_web.request_log import request_id_from, route_template


def test_a_printable_client_request_id_is_kept():
    assert request_id_from("req-42_ABC.x:y") == "req-42_ABC.x:y"
    assert request_id_from("x" * 128) == "x" * 128


@pytest.mark.parametrize("header", [None, "", "x" * 129, "has space", "tab\there", "caf\u00e9", "nl\n"])
def test_a_missing_or_unacceptable_request_id_is_replaced_by_a_generated_one(header):
    generated = request_id_from(header)

    assert generated != header
    assert len(generated) == 32
    assert generated.isalnum()


def test_two_generated_request_ids_differ():
    assert request_id_from(None) != request_id_from(None)


def test_route_templates_drop_converters_and_keep_names():
    assert route_template("/realtime/v1/sessions/<session:session_ref>/<io>") == (
        "/realtime/v1/sessions/<session_ref>/<io>"
    )
    assert route_template("/s2/v1/streams/<path:name>/records") == "/s2/v1/streams/<name>/records"
    assert route_template("/healthz") == "/healthz"


def log_record(**fields):
    record = logging.LogRecord("session_web.access", logging.INFO, __file__, 1, "request %s", ("x",), None)
    if fields:
        record.fields = fields
    return record


def test_the_json_format_writes_one_object_with_the_fields_as_keys():
    line = JsonFormatter().format(log_record(method="GET", status=200, request_id="r1"))

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO"
    assert entry["logger"] == "session_web.access"
    assert entry["message"] == "request x"
    assert entry["time"].endswith("Z")
    assert (entry["method"], entry["status"], entry["request_id"]) == ("GET", 200, "r1")


def test_the_json_format_keeps_a_traceback_inside_the_object():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )

    entry = json.loads(JsonFormatter().format(record))

    assert "ValueError: boom" in entry["exception"]


def test_configure_logging_installs_the_chosen_format():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        json_formatter = root.handlers[0].formatter
        configure_logging("INFO", "text")
        text_formatter = root.handlers[0].formatter
    finally:
        root.handlers[:], root.level = saved, level

    assert isinstance(json_formatter, JsonFormatter)
    assert not isinstance(text_formatter, JsonFormatter)


def test_log_format_and_metrics_settings_come_from_the_environment():
    settings = Settings.from_env(
        {"LOG_FORMAT": "JSON", "SESSIONS_METRICS_PORT": "0", "SESSIONS_METRICS_HOST": "0.0.0.0"}
    )

    assert (settings.log_format, settings.metrics_port, settings.metrics_host) == ("json", 0, "0.0.0.0")
    assert (Settings().log_format, Settings().metrics_port, Settings().metrics_host) == (
        "text",
        9465,
        "127.0.0.1",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LOG_FORMAT", "xml"), ("SESSIONS_METRICS_PORT", "-1"), ("SESSIONS_METRICS_PORT", "x")],
)
def test_a_bad_observability_setting_names_its_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counting_functions_move_their_metrics():
    before = (
        sample("sessions_run_launches_total", launcher="webhook", reason="initial"),
        sample("sessions_channel_appends_total", io="out"),
        sample("sessions_channel_appended_bytes_total", io="out"),
        sample("sessions_http_requests_total", method="OTHER", route="/x", status="405"),
    )

    metrics.count_run_launch("webhook", "initial")
    metrics.count_append("out", 2, 10)
    metrics.count_request("BREW", "/x", 405, 0.01)

    after = (
        sample("sessions_run_launches_total", launcher="webhook", reason="initial"),
        sample("sessions_channel_appends_total", io="out"),
        sample("sessions_channel_appended_bytes_total", io="out"),
        sample("sessions_http_requests_total", method="OTHER", route="/x", status="405"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 2, 10, 1]


def test_an_open_subscriber_counts_until_its_block_ends():
    before = sample("sessions_sse_subscribers")

    with metrics.open_subscriber():
        during = sample("sessions_sse_subscribers")

    assert (during - before, sample("sessions_sse_subscribers") - before) == (1, 0)


def test_a_delivery_latency_is_never_negative():
    before = sample("sessions_delivery_latency_seconds_bucket", le="0.001")

    metrics.observe_delivery(-0.5)  # a writer's clock ahead of ours

    assert sample("sessions_delivery_latency_seconds_bucket", le="0.001") == before + 1


def test_prepare_multiprocess_dir_makes_a_private_dir_or_empties_the_given_one(tmp_path):
    environ = {}
    made = metrics_dir.prepare_multiprocess_dir(environ)
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"old")
    (given / "keep.txt").write_text("not ours")

    kept = metrics_dir.prepare_multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(given)})

    try:
        assert environ["PROMETHEUS_MULTIPROC_DIR"] == made
        assert kept is None
        assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
    finally:
        metrics_dir.remove_dir(made)
