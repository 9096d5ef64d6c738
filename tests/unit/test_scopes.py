"""The scope checks the use cases make (``scopes.authorize*``): who may do what, and the message."""

import pytest

from session_core.errors import Forbidden
from session_core.models import Environment, EnvironmentType
from session_core.scopes import (
    Principal,
    PrincipalKind,
    authorize,
    authorize_agent_for_out,
    authorize_list,
    authorize_run,
)
from tests.unit.factories import make_session

ENV = Environment("env1", "dev", EnvironmentType.DEVELOPMENT, "org", "proj", "tr_dev_x")
SECRET_KEY = Principal(ENV, PrincipalKind.PRIVATE)


def token(*scopes: str, run_id: str | None = None, session_id: str | None = None) -> Principal:
    return Principal(ENV, PrincipalKind.PUBLIC_JWT, scopes, run_id=run_id, session_id=session_id)


def test_authorize_names_the_scopes_a_refused_token_holds():
    authorize(token("write:sessions:chat-1"), "write", {"sessions": ["session_x", "chat-1"]})
    authorize(token("write:tasks:agent"), "write", {"tasks": ["agent"]}, "tasks")

    with pytest.raises(
        Forbidden, match="^Public Access Token is missing required permissions.*'read:sessions:chat-1'"
    ):
        authorize(token("read:sessions:chat-1"), "write", {"sessions": ["chat-1"]})


def test_listing_needs_read_on_sessions_or_on_every_filtered_task():
    authorize_list(SECRET_KEY, ())
    authorize_list(token("read:sessions"), ("a", "b"))
    authorize_list(token("read:tasks:a", "read:tasks:b"), ("a", "b"))
    authorize_list(token("read:tasks"), ())

    with pytest.raises(Forbidden):
        authorize_list(token("read:tasks:a"), ("a", "b"))
    with pytest.raises(Forbidden):
        authorize_list(token("read:tasks:a"), ())


def test_a_run_token_acts_on_its_own_run_only():
    authorize_run(SECRET_KEY, "run_any")
    authorize_run(token(run_id="run_1"), "run_1")

    with pytest.raises(Forbidden, match="^This token does not grant access to this run$"):
        authorize_run(token(run_id="run_1"), "run_2")
    with pytest.raises(Forbidden):
        authorize_run(token("admin"), "run_1")


def test_only_the_agent_speaks_on_out():
    session = make_session()
    agent = token(run_id="run_1", session_id=session.friendly_id)
    browser = token(f"write:sessions:{session.friendly_id}")

    authorize_agent_for_out(SECRET_KEY, "out", "Appending to", None)
    authorize_agent_for_out(agent, "out", "Appending to", session)
    authorize_agent_for_out(browser, "in", "Appending to", session)
    with pytest.raises(Forbidden, match="^Appending to the out channel requires secret key authentication$"):
        authorize_agent_for_out(browser, "out", "Appending to", session)
    with pytest.raises(Forbidden, match="^Initializing the out channel"):
        authorize_agent_for_out(agent, "out", "Initializing", None)
    with pytest.raises(Forbidden):
        authorize_agent_for_out(agent, "out", "Appending to", make_session())
