"""The admin token check, shared by the admin routes (`/metrics`, `/status`) and the JSON API
(`/api/`): what a request presents (the bearer token, and `?token=` where a route allows it)
compared with `admin.token` in constant time.

Whether a route is open when no token is configured is the route's decision: the admin
routes are, the API is not (SPEC 10: 403 `admin_token_not_set`).
"""

from __future__ import annotations

import hmac

from aiohttp import web


def token_bytes(token: str) -> bytes:
    """A token as bytes, for any text: header bytes that are not UTF-8 reach us as lone
    surrogates, which plain `.encode()` refuses (a 500). `surrogatepass` never raises and maps
    each text to its own bytes, so the bytes are equal exactly when the tokens are."""
    return token.encode("utf-8", "surrogatepass")


def token_matches(request: web.Request, expected: str, *, allow_query: bool = False) -> bool:
    """True when the request presents `expected` (which must not be empty): as
    `Authorization: Bearer <token>`, or as `?token=` when `allow_query`."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    candidates = [given.strip()] if scheme.lower() == "bearer" else []
    if allow_query and "token" in request.query:
        candidates.append(request.query["token"])
    # Compare every candidate (no short-circuit on the first) so timing says nothing either.
    wanted = token_bytes(expected)
    results = [hmac.compare_digest(token_bytes(c), wanted) for c in candidates]
    return any(results)
