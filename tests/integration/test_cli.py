"""The ``sessions`` command line: every mistake is one line that says what to do, never a traceback."""

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from session_core.db.migrate import upgrade_database
from session_web.cli import main
from tests.servers import free_port


def run(*args, database_url, **env):
    result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url, **env})
    return result


def one_line_error(result) -> str:
    """The single stderr line of a failed command (and nothing that looks like a traceback)."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def migrated_url(sqlite_url):
    upgrade_database(sqlite_url)
    return sqlite_url


def test_env_create_where_no_database_exists_says_to_run_migrate(tmp_path):
    result = run("env", "create", "--slug", "x", database_url=f"sqlite:///{tmp_path}/none.db")

    line = one_line_error(result)
    assert "run `sessions migrate` first" in line
    assert not (tmp_path / "none.db").exists()


def test_env_create_on_a_database_never_migrated_says_to_run_migrate(db_url):
    engine = sa.create_engine(db_url)
    engine.connect().close()  # the database exists (SQLite: an empty file), without a schema
    engine.dispose()

    result = run("env", "create", "--slug", "x", database_url=db_url)

    assert "is not migrated: run `sessions migrate` first" in one_line_error(result)


def test_env_create_after_migrate_succeeds(sqlite_url):
    migrated = run("migrate", database_url=sqlite_url)

    created = run("env", "create", "--slug", "x", "--json", database_url=sqlite_url)

    assert migrated.exit_code == 0, migrated.output
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["slug"] == "x"


def test_an_unreachable_database_is_one_line_naming_database_url():
    url = f"postgresql://postgres:secret-password@127.0.0.1:{free_port()}/nowhere"

    line = one_line_error(run("env", "list", database_url=url))

    assert line.startswith("Error: cannot use the database at postgresql+psycopg2://postgres:***@127.0.0.1")
    assert "check DATABASE_URL" in line
    assert "secret-password" not in line


@pytest.mark.parametrize(
    "args",
    [
        ["env", "create", "--slg", "x"],
        ["env", "create"],
        ["env", "create", "--slug", "x", "--type", "NOPE"],
        ["env", "rotate-key"],
        ["serve", "--port", "abc"],
        ["nonsense"],
    ],
)
def test_a_bad_option_is_one_line_pointing_at_help(args, migrated_url):
    line = one_line_error(run(*args, database_url=migrated_url))

    assert line.startswith("Error: ")
    assert "--help'" in line


def test_a_bad_setting_is_one_line_naming_the_variable(migrated_url):
    line = one_line_error(run("env", "list", database_url=migrated_url, SESSIONS_AUTH_CACHE_SECONDS="soon"))

    assert line == "Error: SESSIONS_AUTH_CACHE_SECONDS must be an integer, got 'soon'"


def test_a_taken_slug_is_one_line(migrated_url):
    assert run("env", "create", "--slug", "twice", database_url=migrated_url).exit_code == 0

    line = one_line_error(run("env", "create", "--slug", "twice", database_url=migrated_url))

    assert "already exists" in line


def test_env_list_shows_slug_type_id_and_created_but_no_key(migrated_url):
    first = json.loads(run("env", "create", "--slug", "alpha", "--json", database_url=migrated_url).stdout)
    second = json.loads(
        run(
            "env", "create", "--slug", "beta", "--type", "PRODUCTION", "--json", database_url=migrated_url
        ).stdout
    )

    table = run("env", "list", database_url=migrated_url)
    listed = json.loads(run("env", "list", "--json", database_url=migrated_url).stdout)

    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SLUG", "TYPE", "ID", "CREATED"]
    assert lines[1].split()[:3] == ["alpha", "DEVELOPMENT", first["id"]]
    assert lines[2].split()[:3] == ["beta", "PRODUCTION", second["id"]]
    assert [(e["slug"], e["type"], e["id"]) for e in listed["data"]] == [
        ("alpha", "DEVELOPMENT", first["id"]),
        ("beta", "PRODUCTION", second["id"]),
    ]
    assert all(e["createdAt"].endswith("Z") for e in listed["data"])
    assert first["apiKey"] not in table.output + json.dumps(listed)


def test_env_list_of_no_environments_prints_the_header_only(migrated_url):
    result = run("env", "list", database_url=migrated_url)

    assert result.stdout.split() == ["SLUG", "TYPE", "ID", "CREATED"]


def test_rotate_key_prints_a_new_key_for_the_same_environment(migrated_url):
    created = json.loads(run("env", "create", "--slug", "rot", "--json", database_url=migrated_url).stdout)

    rotated = run("env", "rotate-key", "rot", "--json", database_url=migrated_url)

    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.stdout)
    assert new["id"] == created["id"]
    assert new["apiKey"].startswith("tr_dev_")
    assert new["apiKey"] != created["apiKey"]


def test_rotate_key_of_an_unknown_slug_says_where_slugs_are_listed(migrated_url):
    line = one_line_error(run("env", "rotate-key", "ghost", database_url=migrated_url))

    assert line == "Error: No environment with slug 'ghost'; `sessions env list` shows the slugs"


@pytest.mark.parametrize("url", ["not a url", "mysql://user@host/db"])
def test_a_database_url_we_cannot_use_is_one_line(url):
    line = one_line_error(run("env", "list", database_url=url))

    assert line.startswith("Error: DATABASE_URL is not a database URL we can use")


def test_migrate_against_an_unreachable_database_is_one_line():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"

    line = one_line_error(run("migrate", database_url=url))

    assert line.startswith("Error: migration failed at postgresql+psycopg2://postgres@127.0.0.1")
    assert line.endswith("(check DATABASE_URL and that the server is up)")
