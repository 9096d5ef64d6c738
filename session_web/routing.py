"""Route declarations that run the wire's checks in the wire's order, once for every route.

A view declares its limits (``max_bytes``, ``body`` schema, JWT support, error style) and gets an
authenticated ``Principal`` plus the validated body; the order is 401, 413, 400 (empty body, bad
JSON), 422 (schema), then the view, whose service decides 403 and 404. Before all of them, on every
route, path parameters and header values no database can hold are a 400.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Blueprint, g, request
from marshmallow import Schema
from werkzeug.routing import PathConverter

from session_core.auth import authenticate
from session_core.errors import BadRequest, PayloadTooLarge
from session_core.schemas import load_body
from session_core.scopes import Principal
from session_core.text import is_storable
from session_web.errors import ErrorStyle
from session_web.services import services

View = TypeVar("View", bound=Callable[..., Any])
KIB = 1024
#: Bodies nested deeper are refused: copying and storing them recurses once per level.
MAX_JSON_DEPTH = 100


class SessionRefConverter(PathConverter):
    """A URL segment naming a session: any text, slashes and line breaks included.

    Werkzeug's ``path`` stops at a newline, which would make an externalId holding one unreachable.
    """

    regex = r"[^/][\s\S]*?"


def current_principal(*, allow_jwt: bool) -> Principal:
    """Authenticate the request's bearer token against the (cached) environments."""
    s = services()
    return authenticate(
        request.headers.get("Authorization"), s.environments, allow_jwt=allow_jwt, spend=s.spend_token
    )


def read_body(max_bytes: int) -> bytes:
    """The raw body, refusing a missing ``Content-Length`` or one over ``max_bytes`` (413)."""
    length = request.content_length
    if length is None or length > max_bytes:
        raise PayloadTooLarge("Request body too large")
    return request.get_data(cache=True)


def check_request_text(url_args: dict[str, Any], header_values: Iterable[str]) -> None:
    """Refuse path parameters and header values no database can hold (NUL, lone surrogates).

    One check for every route, before any view sees them: a session reference, a stream name or
    a header value that reached a query could only fail there, as a 500.

    :raise BadRequest: ``Params Error`` (the wire's 400 for a bad path), or a header's message.
    """
    if not all(is_storable(value) for value in url_args.values() if isinstance(value, str)):
        raise BadRequest("Params Error")
    if any("\x00" in value for value in header_values):
        raise BadRequest("Header values must not contain the NUL character")


def refuse_unstorable_request_text(endpoint: str | None, url_args: dict[str, Any] | None) -> None:
    """The app's URL value preprocessor: ``check_request_text`` on every matched request, whatever
    its blueprint, before any view (and so any query) runs."""
    check_request_text(url_args or {}, request.headers.values())


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _check_text(value: Any, depth: int = 0) -> None:
    """Refuse what Python's JSON accepts but we cannot store (NUL, lone surrogates, deep nesting)."""
    if isinstance(value, dict | list) and depth >= MAX_JSON_DEPTH:
        raise BadRequest(f"Invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest("Invalid JSON: strings must not contain the NUL character (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("Invalid JSON: strings must not contain unpaired surrogates") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, depth + 1)
            _check_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_text(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise BadRequest("Invalid JSON: numbers must be finite")


def parse_json(raw: bytes) -> Any:
    """Parse a JSON body: empty and malformed bodies are 400s, never 500s."""
    if not raw.strip():
        raise BadRequest("Request body is empty")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("Invalid JSON") from None
    _check_text(data)
    return data


def api_route(
    bp: Blueprint,
    rule: str,
    *,
    methods: list[str],
    body: Schema | None = None,
    max_bytes: int | None = None,
    allow_jwt: bool = True,
    error_style: ErrorStyle = "json",
) -> Callable[[View], View]:
    """Register ``view`` on ``bp``; it is called as ``view(principal, [body,] **url_args)``."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(**url_args: Any) -> Any:
            g.error_style = error_style
            principal = current_principal(allow_jwt=allow_jwt)
            raw = read_body(max_bytes) if max_bytes is not None else None
            if body is None:
                return view(principal, **url_args)
            return view(principal, load_body(body, parse_json(raw or b"")), **url_args)

        bp.add_url_rule(rule, view.__name__, wrapper, methods=methods)
        return view

    return decorator
