"""The operator console at `/status` (SPEC 10) when `admin.token` is set: a sign-in form, then
one page whose script reads and steers the relay through the JSON API under `/api/`
(relay.ingress.api), the same functions `relay <command> --json` calls. So the console
computes no figure of its own.

No build step and no CDN: the page, `console.js` and `console.css` are files in this
package, served by the relay. The script is plain JavaScript with no library (a few hundred
lines: nothing to vendor, pin and keep patched); it writes every value with `textContent`,
never as markup.

Sign-in: `POST /status/sign-in` with the token from the form sets the session cookie
(relay.ingress.auth: HttpOnly, SameSite=Strict, Secure over HTTPS, 12 h); `POST
/status/sign-out` deletes it. An old `/status?token=` link signs in the same way and opens
`/status` without the token (a page that moves on by itself, so the cookie is sent even when
the link was followed from another site). Both forms are refused from another origin.

Without `admin.token` the API answers 403, so there is no console: `/status` stays the open,
read-only page of relay.ingress.admin, which says to set the token.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from relay import __version__
from relay.ingress import auth
from relay.ingress.state import CONFIG
from relay.keys import LOG_STATES

_HERE = Path(__file__).parent
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/status/sign-in", sign_in)
    app.router.add_post("/status/sign-out", sign_out)
    app.router.add_get("/status/assets/{name}", asset)


def _headers(referrer: str = "same-origin") -> dict[str, str]:
    """`same-origin`, not `no-referrer`: with no-referrer a browser sends `Origin: null` on
    the console's own POSTs, which the cross-site check must refuse."""
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": referrer,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": CSP,
    }


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _html(
    template: str, status: int = 200, referrer: str = "same-origin", **context: Any
) -> web.Response:
    body = _environment().get_template(template).render(version=__version__, **context)
    headers = _headers(referrer)
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)


def _settings(request: web.Request) -> tuple[str, int]:
    config = request.app[CONFIG].config
    return config.admin.token, config.server.trusted_proxy_hops


def _sign_in_page(message: str = "", status: int = 401) -> web.Response:
    """The form, as a 401 (not signed in) that names the API's scheme too."""
    response = _html("signin.html", status, message=message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="payrelay"'
    return response


async def page(request: web.Request) -> web.Response:
    """`GET /status` with `admin.token` set: the console, or the sign-in form."""
    token, hops = _settings(request)
    if "token" in request.query:  # an old bookmarked link: sign in, then drop the token
        if not auth.token_equals(request.query["token"], token):
            return _sign_in_page("The token in that link is not the admin token.", 401)
        response = _html("moved.html", referrer="no-referrer")  # the URL holds the token
        auth.set_session(response, request, token, hops)
        return response
    if not (auth.session_valid(request, token) or auth.token_matches(request, token)):
        return _sign_in_page()  # a bearer token gets the page too (it holds no data)
    return _html("console.html", states=LOG_STATES)


def _see_status() -> web.Response:
    """303 to the console: the browser GETs it (same site: the cookie goes with it)."""
    return web.Response(status=303, headers={**_headers(), "Location": "/status"})


async def sign_in(request: web.Request) -> web.StreamResponse:
    token, hops = _settings(request)
    if not token:
        return web.Response(status=403, text="Set admin.token in the config to use the console.\n")
    if not auth.same_origin(request, hops):
        return _sign_in_page("Refused: the sign-in form was sent from another site.", 403)
    form = await request.post()
    given = form.get("token")
    if not isinstance(given, str) or not auth.token_equals(given.strip(), token):
        return _sign_in_page("Wrong token: that is not the admin token.", 401)
    response = _see_status()
    auth.set_session(response, request, token, hops)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    _, hops = _settings(request)
    if not auth.same_origin(request, hops):
        return _sign_in_page("Refused: the sign-out form was sent from another site.", 403)
    response = _see_status()
    auth.end_session(response, request, hops)
    return response


@functools.cache
def _asset_bytes(name: str) -> bytes:
    return (_HERE / name).read_bytes()


async def asset(request: web.Request) -> web.Response:
    """The console's script and style sheet: no data in them, so no sign-in needed."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound
    return web.Response(
        body=_asset_bytes(name),
        content_type=ASSETS[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
