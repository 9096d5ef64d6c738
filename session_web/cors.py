"""CORS as Trigger.dev's routes answer it: origins reflected, preflight answered with ``{}``."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

ALLOW_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"
EXPOSE_HEADERS = "x-trigger-jwt,x-trigger-jwt-claims"


def _preflight() -> Response | None:
    if request.method != "OPTIONS":
        return None
    response = jsonify({})
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    requested = request.headers.get("Access-Control-Request-Headers")
    if requested:
        response.headers["Access-Control-Allow-Headers"] = requested
    response.headers["Access-Control-Max-Age"] = "300"
    return response


def _decorate(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
        response.headers.setdefault("Access-Control-Expose-Headers", EXPOSE_HEADERS)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_preflight)
    app.after_request(_decorate)
