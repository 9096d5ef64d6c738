"""The web console at ``/``: page shells whose ES modules drive the public API from the browser.

The browser keeps the secret API key in ``sessionStorage`` and sends it as a bearer token from
the page's scripts, so no page request carries it and no cookie ever holds it; the pages
themselves are the same for everyone. Lists and reads go through the API routes, so the console
sees exactly what a client sees (ClickHouse lists included). Every console response carries a
strict Content-Security-Policy: scripts, styles and connections from this origin only.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@bp.after_request
def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/")
def session_list() -> str:
    return render_template("console/list.html")


@bp.get("/sign-in")
def sign_in() -> str:
    return render_template("console/sign_in.html")


@bp.get("/sessions/<session:session_ref>")
def session_page(session_ref: str) -> str:
    return render_template("console/session.html", session_ref=session_ref)
