"""The admin token check, shared by the admin routes (`/metrics`, `/status`) and the JSON API
(`/api/`): what a request presents (the bearer token, and `?token=` where a route allows it)
compared with `admin.token` in constant time; and the console's session (SPEC 10).

Whether a route is open when no token is configured is the route's decision: the admin
routes are, the API is not (SPEC 10: 403 `admin_token_not_set`).

The console's session is a cookie, `relay_session=v1.<expiry>.<mac>`: the mac is an
HMAC-SHA256 of the expiry under a key derived from `admin.token`. Stateless on purpose: any
web dyno checks it with the config alone (no Redis round trip per API call, no session keys
to expire), and rotating `admin.token` ends every session at once. Signing out deletes the
cookie from that browser; a copy of it (it is HttpOnly, so no script can read it) stays valid
until its expiry or the next token rotation.

Cross-site requests: the cookie is SameSite=Strict, and every state-changing request that a
cookie (not a bearer token) signs in must also come from the relay's own origin: its `Origin`
(or, without one, its `Referer`) names the host the request was sent to. A form on another
site, or a same-site page on another port, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web

SESSION_COOKIE = "relay_session"
SESSION_TTL_S = 12 * 3600
_SESSION_VERSION = "v1"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Access = Literal["bearer", "session", "unauthorized", "cross_site"]


def token_bytes(token: str) -> bytes:
    """A token as bytes, for any text: header bytes that are not UTF-8 reach us as lone
    surrogates, which plain `.encode()` refuses (a 500). `surrogatepass` never raises and maps
    each text to its own bytes, so the bytes are equal exactly when the tokens are."""
    return token.encode("utf-8", "surrogatepass")


def token_equals(given: str, expected: str) -> bool:
    return hmac.compare_digest(token_bytes(given), token_bytes(expected))


def token_matches(request: web.Request, expected: str, *, allow_query: bool = False) -> bool:
    """True when the request presents `expected` (which must not be empty): as
    `Authorization: Bearer <token>`, or as `?token=` when `allow_query`."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    candidates = [given.strip()] if scheme.lower() == "bearer" else []
    if allow_query and "token" in request.query:
        candidates.append(request.query["token"])
    # Compare every candidate (no short-circuit on the first) so timing says nothing either.
    results = [token_equals(c, expected) for c in candidates]
    return any(results)


# --- the console's session --------------------------------------------------------------------


def _mac(token: str, payload: str) -> str:
    key = hmac.new(token_bytes(token), b"payrelay console session", hashlib.sha256).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A cookie value good for SESSION_TTL_S from `now`, for this `admin.token`."""
    expires = int(time.time() if now is None else now) + SESSION_TTL_S
    payload = f"{_SESSION_VERSION}.{expires}"
    return f"{payload}.{_mac(token, payload)}"


def session_valid(request: web.Request, token: str, now: float | None = None) -> bool:
    """True when the request carries a session cookie signed for `token` and not expired."""
    value = request.cookies.get(SESSION_COOKIE, "")
    version, _, rest = value.partition(".")
    expires, _, mac = rest.partition(".")
    if version != _SESSION_VERSION or not (expires.isascii() and expires.isdigit()):
        return False
    if not hmac.compare_digest(mac.encode(), _mac(token, f"{version}.{expires}").encode()):
        return False
    moment = time.time() if now is None else now
    return moment < int(expires) <= moment + SESSION_TTL_S + 60


def _forwarded(request: web.Request, name: str, hops: int) -> str | None:
    """What the outermost of `hops` trusted proxies put in header `name` (None: no proxy)."""
    if hops <= 0:
        return None
    values = [v.strip() for v in ",".join(request.headers.getall(name, [])).split(",")]
    values = [v for v in values if v]
    if not values:
        return None
    return values[-hops] if len(values) >= hops else values[0]


def served_over_https(request: web.Request, trusted_proxy_hops: int) -> bool:
    proto = _forwarded(request, "X-Forwarded-Proto", trusted_proxy_hops)
    return request.secure or (proto or "").lower() == "https"


def set_session(response: web.StreamResponse, request: web.Request, token: str, hops: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        new_session(token),
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=served_over_https(request, hops),
    )


def end_session(response: web.StreamResponse, request: web.Request, hops: int) -> None:
    response.del_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=served_over_https(request, hops),
    )


def same_origin(request: web.Request, trusted_proxy_hops: int) -> bool:
    """True when the request's `Origin` (else its `Referer`) names the host it was sent to:
    its `Host`, or behind trusted proxies the outermost one's `X-Forwarded-Host`. The scheme
    is not compared (a TLS-terminating proxy makes it differ; the host is what an attacker's
    page cannot share). No Origin and no Referer: refused."""
    origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
    try:
        host = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    if not host or origin == "null":
        return False
    hosts = {request.host.lower()}
    if (forwarded := _forwarded(request, "X-Forwarded-Host", trusted_proxy_hops)) is not None:
        hosts.add(forwarded.lower())
    return host in hosts


def api_access(request: web.Request, token: str, trusted_proxy_hops: int) -> Access:
    """How an `/api/` request is signed in: a bearer token, or the console's cookie (a
    state-changing request with it only from the relay's own origin: else `cross_site`)."""
    if token_matches(request, token):
        return "bearer"
    if not session_valid(request, token):
        return "unauthorized"
    if request.method not in _SAFE_METHODS and not same_origin(request, trusted_proxy_hops):
        return "cross_site"
    return "session"
