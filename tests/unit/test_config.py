"""Settings from the environment: safe defaults, and a bad value names its variable."""

import pytest

from session_core.config import ConfigError, Settings


def test_the_service_listens_on_loopback_unless_told_otherwise():
    assert Settings.from_env({}).host == "127.0.0.1"
    assert Settings.from_env({"SESSIONS_HOST": "0.0.0.0"}).host == "0.0.0.0"


def test_worker_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "WEB_CONCURRENCY": "3",
            "SESSIONS_MAX_LIVE_READS": "2000",
            "SESSIONS_GRACEFUL_TIMEOUT": "7",
            "SESSIONS_KEEPALIVE": "0",
            "SESSIONS_CLIENT_TIMEOUT": "2.5",
        }
    )
    assert settings.web_concurrency == 3
    assert settings.max_live_reads == 2000
    # Connections leave room beyond the live reads for appends and the control plane.
    assert settings.worker_connections == 3000
    assert (settings.graceful_timeout_seconds, settings.keepalive_seconds) == (7, 0)
    assert settings.client_timeout_seconds == 2.5


def test_the_defaults_hold_ten_thousand_live_reads_with_room_to_spare():
    settings = Settings.from_env({})
    assert settings.max_live_reads == 10_000
    assert settings.worker_connections > settings.max_live_reads


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"SESSIONS_MAX_LIVE_READS": "many"}, "SESSIONS_MAX_LIVE_READS"),
        ({"SESSIONS_MAX_LIVE_READS": "0"}, "SESSIONS_MAX_LIVE_READS"),
        ({"SESSIONS_WORKER_CONNECTIONS": "x"}, "SESSIONS_WORKER_CONNECTIONS"),
        (
            {"SESSIONS_MAX_LIVE_READS": "500", "SESSIONS_WORKER_CONNECTIONS": "500"},
            "SESSIONS_WORKER_CONNECTIONS",
        ),
        ({"WEB_CONCURRENCY": "two"}, "WEB_CONCURRENCY"),
        ({"SESSIONS_GRACEFUL_TIMEOUT": "-1"}, "SESSIONS_GRACEFUL_TIMEOUT"),
        ({"SESSIONS_KEEPALIVE": "soon"}, "SESSIONS_KEEPALIVE"),
        ({"SESSIONS_CLIENT_TIMEOUT": "nan"}, "SESSIONS_CLIENT_TIMEOUT"),
        ({"SESSIONS_CLIENT_TIMEOUT": "-3"}, "SESSIONS_CLIENT_TIMEOUT"),
    ],
)
def test_a_bad_value_names_its_variable(environ, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environ)
