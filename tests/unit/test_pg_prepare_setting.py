"""``SESSIONS_PG_PREPARE``: on unless switched off, and a value it cannot read names the variable."""

import pytest

from session_core.config import ConfigError, Settings


def test_prepared_statements_are_on_by_default():
    assert Settings.from_env({}).pg_prepare is True
    assert Settings.from_env({"SESSIONS_PG_PREPARE": ""}).pg_prepare is True


@pytest.mark.parametrize(
    ("raw", "expected"), [("0", False), ("off", False), ("False", False), ("1", True), ("yes", True)]
)
def test_sessions_pg_prepare_reads_the_usual_spellings_of_a_switch(raw, expected):
    assert Settings.from_env({"SESSIONS_PG_PREPARE": raw}).pg_prepare is expected


def test_a_value_that_is_no_switch_names_the_variable():
    with pytest.raises(ConfigError, match="SESSIONS_PG_PREPARE"):
        Settings.from_env({"SESSIONS_PG_PREPARE": "sometimes"})
