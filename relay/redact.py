"""Redact URLs and secrets in free text: error reasons, answer excerpts, log values.

Sink URLs are credentials (Discord's and Slack's webhook tokens sit in the path, an http sink
may carry `?token=`), and they turn up in text the relay stores and shows: aiohttp quotes the
full URL in its error messages, a broken server may echo the request line back. Comparing text
with the configured URL is not enough (aiohttp prints `HTTP://Host/` as `http://host/`, and
percent-encodes), so the rule goes by the structure of a URL, whatever its spelling:

1. A URL starts at `scheme://` (a letter, then letters, digits, `+`, `-`, `.`; any case) and
   runs to the next whitespace or control character. Quotes and brackets do not end it, so a
   secret containing `'` or `)` is not half-kept; closing punctuation at its very end
   (`'"`)]}>,.;:!?`) is put back after the replacement, so `url='…'` still reads naturally.
2. Of a URL only `scheme://host[:port]` is kept, as written. Everything else (userinfo
   `user:pw@`, the path, the query, the fragment) becomes `/…`:
   `https://discord.com/api/webhooks/1/tok?wait=true` -> `https://discord.com/…`.
   When what follows `scheme://` is not a plain host (name or IP, optional numeric port),
   nothing of it is kept: `https://…`.
3. Outside URLs, the value of every query-style parameter (`?name=value`, `&name=value`,
   `;name=value`) becomes `…`: `POST /hook?token=s3cret` -> `POST /hook?token=…`.
4. `redact(text, known(secrets))` also replaces each given string wherever it appears with
   `[redacted]`, longest first; a sink passes the parts of its own URL (`url_secrets`), so an
   answer that echoes its path without a scheme (`POST /api/webhooks/1/tok`) shows nothing.
   Strings shorter than `MIN_SECRET_LEN` are skipped: they would shred ordinary text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DROPPED = "…"
REDACTED = "[redacted]"
MIN_SECRET_LEN = 6

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\x00-\x1f\x7f]*")
_TRAILING = re.compile(r"""['"`)\]}>,.;:!?]+$""")
_AUTHORITY_END = re.compile(r"[/?#\\]")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[\w.~-]+)(?::\d{1,5})?")
_QUERY_VALUE = re.compile(r"([?&;][\w.\-\[\]]+=)([^\s&;#]+)")


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every URL cut to its host, every query value and every given secret gone
    (`secrets` as `known()` returns them: the log redactor calls this for every string)."""
    if "://" in text:
        text = _URL.sub(_shorten_url, text)
    if "=" in text:
        text = _QUERY_VALUE.sub(_drop_query_value, text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def known(secrets: Iterable[str]) -> tuple[str, ...]:
    """Secrets ready for `redact`: long enough, unique, longest first (so a secret that
    contains another is replaced whole)."""
    return tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True))


def url_secrets(url: str) -> set[str]:
    """The parts of `url` that may be credentials: the path (whole, and each segment), every
    query value, the userinfo; as written and percent-decoded and -encoded (an echo may use any
    form). Parts shorter than MIN_SECRET_LEN are left out."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    raw = {parts.path, *parts.path.split("/"), parts.fragment}
    raw |= {value for _, _, value in (p.partition("=") for p in re.split(r"[&;]", parts.query))}
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        raw |= {userinfo, *userinfo.split(":")}
    found: set[str] = set()
    for part in raw:
        found |= {part, unquote(part), quote(unquote(part), safe="/")}
    return {part for part in found if len(part) >= MIN_SECRET_LEN}


def redact_url(url: str) -> str:
    """A configured URL (Redis's) without its password, the rest as written (Heroku's REDIS_URL
    carries one): `redis://u:***@[::1]:6379/0`. For the operator's own error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 host keeps its brackets
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _shorten_url(match: re.Match[str]) -> str:
    token = match.group(0)
    trailing = _TRAILING.search(token)
    tail = trailing.group(0) if trailing else ""
    url = token[: len(token) - len(tail)]
    scheme, _, rest = url.partition("://")
    if not rest:  # a bare `scheme://`: nothing to hide
        return token
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    has_userinfo = "@" in authority
    host = authority.rpartition("@")[2]
    if not _HOST_PORT.fullmatch(host):
        return f"{scheme}://{DROPPED}{tail}"
    after = rest[len(authority) :]
    if has_userinfo or after not in ("", "/"):
        after = f"/{DROPPED}"
    return f"{scheme}://{host}{after}{tail}"


def _drop_query_value(match: re.Match[str]) -> str:
    value = match.group(2)
    trailing = _TRAILING.search(value)
    tail = trailing.group(0) if trailing else ""
    if value == DROPPED or len(tail) == len(value):  # already redacted, or only punctuation
        return match.group(0)
    return match.group(1) + DROPPED + tail


__all__ = ["DROPPED", "MIN_SECRET_LEN", "REDACTED", "known", "redact", "redact_url", "url_secrets"]
