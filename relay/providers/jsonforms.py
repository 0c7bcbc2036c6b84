r"""JSON written again as a provider's own code writes it, for the providers that sign that.

NOWPayments, Cryptomus and Heleket do not sign the bytes they send: they sign a serialization
of the payload made by their own code (NOWPayments: `JSON.stringify` of the payload with sorted
keys, in Node, or `json_encode` after `tksort`, in PHP; Cryptomus and Heleket: PHP
`json_encode($data, JSON_UNESCAPED_UNICODE)` of the payload without its `sign`). So the relay
parses the raw body and writes it again exactly as that code would, byte for byte; this module
is that writing. Nothing here is lenient: a value the other language would write differently
gets its exact spelling, so a changed payload never reproduces a signature.

- `parse_exact`: the body as those languages' decoders see it, with exact numbers (integers as
  `int`, everything else as `Decimal`) and lone surrogates kept (each writer decides about them).
- `js_stringify`: ECMAScript `JSON.stringify` (ECMA-262 `SerializeJSONProperty`) of what
  `JSON.parse` makes of the body: every number is an IEEE double printed by
  `Number::toString` (`0.00001`, `1e-7`, `1e+21`, `-0` as `0`, an overflow as `null`); strings
  escape only `"`, backslash, control characters and lone surrogates (lower-case hex); object
  keys in JavaScript's own order (array-index keys first, ascending, then insertion order), so
  with `sort_keys` that of `Object.keys(o).sort()` (UTF-16 code units) written into a new object.
  `arrays_as_objects` copies NOWPayments' documented `sortObject`, which turns an array into an
  object keyed "0", "1", ... (its SDK's `sortObjectDeep` keeps arrays).
- `php_json_encode`: PHP 7.1+ `json_encode` (`serialize_precision = -1`) of what
  `json_decode($body, true)` makes of it: integers that fit 64 bits stay integers, other numbers
  are doubles printed by `php_gcvt` with 17 digits (`1.0e-5`, `0.0001`, `1.0e+25`); an array
  whose keys are 0..n-1 (an empty object too) is a JSON list; canonical integer keys become
  integers; `sort_keys` is PHP 8's `ksort` applied at every level (`tksort`); slashes escaped
  unless `escape_slashes=False` (`JSON_UNESCAPED_SLASHES`); non-ASCII as `\uXXXX`-escapes unless
  `escape_unicode=False` (`JSON_UNESCAPED_UNICODE`, which still escapes U+2028 and U+2029). None
  where PHP fails (a double that is not finite, a lone surrogate).
- `members_without`: the top-level object's members as sent, minus one (Heleket's Go SDK
  verifies by cutting `sign` out of the raw body).
"""

from __future__ import annotations

import functools
import json
import math
import re
from decimal import Decimal
from typing import Any

_INT64 = (-(2**63), 2**63 - 1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_exact(body: bytes) -> Any:
    """The JSON value of a UTF-8 body (ValueError/UnicodeDecodeError when it is none)."""
    return json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)


def has_array(value: Any) -> bool:
    if isinstance(value, list):
        return True
    if isinstance(value, dict):
        return any(has_array(item) for item in value.values())
    return False


# --- JavaScript ----------------------------------------------------------------------------------

_JS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _js_string(text: str) -> str:
    return '"' + _JS_ESCAPE.sub(_escape_char, text) + '"'


def _shortest(number: float) -> tuple[str, int]:
    """The shortest digits that round-trip `number` (> 0) and n, with number = 0.digits x 10^n."""
    parts = Decimal(repr(number)).normalize().as_tuple()
    digits = "".join(map(str, parts.digits))
    return digits, int(parts.exponent) + len(digits)


def js_number(value: int | Decimal) -> str:
    """`Number::toString` of the double JavaScript reads for this JSON number."""
    try:
        number = float(value)
    except OverflowError:
        return "null"  # an integer beyond any double: JSON.parse gives Infinity
    if not math.isfinite(number):
        return "null"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits, n = _shortest(abs(number))
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exponent = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _is_array_index(key: str) -> bool:
    """A canonical array index ("0", "7", not "07"): JavaScript lists such keys first."""
    if key == "0":
        return True
    return (
        key[:1] in tuple("123456789") and key.isascii() and key.isdigit() and int(key) < 2**32 - 1
    )


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _js_keys(keys: list[str], sort_keys: bool) -> list[str]:
    if sort_keys:
        keys = sorted(keys, key=_utf16)
        # `result["__proto__"] = v` in the sorting code sets a prototype, not a property.
        keys = [key for key in keys if key != "__proto__"]
    indexes = sorted((key for key in keys if _is_array_index(key)), key=int)
    return indexes + [key for key in keys if not _is_array_index(key)]


def js_stringify(value: Any, *, sort_keys: bool = False, arrays_as_objects: bool = False) -> str:
    """`JSON.stringify` (no indentation) of the value `JSON.parse` made of the same JSON."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, (int, Decimal)):
        return js_number(value)
    if isinstance(value, list):
        if not arrays_as_objects:
            return "[" + ",".join(js_stringify(item, sort_keys=sort_keys) for item in value) + "]"
        value = {str(index): item for index, item in enumerate(value)}
    if isinstance(value, dict):
        members = [
            _js_string(key)
            + ":"
            + js_stringify(value[key], sort_keys=sort_keys, arrays_as_objects=arrays_as_objects)
            for key in _js_keys(list(value), sort_keys)
        ]
        return "{" + ",".join(members) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


# --- PHP -----------------------------------------------------------------------------------------


class _Unencodable(Exception):
    """json_decode or json_encode would fail on this value in PHP."""


def php_double(number: float) -> str:
    """`php_gcvt(number, 17, '.', 'e')` with mode 0 (shortest digits): how PHP 7.1+ writes a
    double in `json_encode` (`serialize_precision = -1`)."""
    if not math.isfinite(number):
        raise _Unencodable("INF and NAN cannot be JSON encoded")
    sign = "-" if math.copysign(1.0, number) < 0 else ""
    if number == 0:
        return sign + "0"
    digits, point = _shortest(abs(number))
    if point > 17 or point < -3:
        exponent = point - 1
        fraction = digits[1:] or "0"
        return f"{sign}{digits[0]}.{fraction}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    if point <= 0:
        return sign + "0." + "0" * -point + digits
    whole = digits[:point].ljust(point, "0")
    rest = digits[point:]
    return sign + whole + ("." + rest if rest else "")


def _php_number(value: int | Decimal) -> str:
    if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        return str(value)
    try:
        return php_double(float(value))
    except OverflowError:
        raise _Unencodable("an integer beyond a double") from None


_PHP_TO_ASCII = re.compile(r'["\\/\x00-\x1f\x80-\U0010ffff]')
_PHP_KEEP_UNICODE = re.compile(r'["\\/\x00-\x1f\u2028\u2029\ud800-\udfff]')


def _php_char(char: str, escape_slashes: bool) -> str:
    code = ord(char)
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char == "/":
        return "\\/" if escape_slashes else "/"
    if 0xD800 <= code <= 0xDFFF:
        raise _Unencodable("Single unpaired UTF-16 surrogate")  # json_decode refuses it
    if code > 0xFFFF:
        high, low = divmod(code - 0x10000, 0x400)
        return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"
    return f"\\u{code:04x}"


def _php_string(text: str, escape_slashes: bool, escape_unicode: bool) -> str:
    pattern = _PHP_TO_ASCII if escape_unicode else _PHP_KEEP_UNICODE
    return '"' + pattern.sub(lambda match: _php_char(match.group(), escape_slashes), text) + '"'


_PHP_NUMERIC = re.compile(r"[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*")
_PHP_INT_KEY = re.compile(r"-?[1-9][0-9]*|0")


def _php_key(key: str) -> int | str:
    """json_decode's array key: a canonical decimal integer that fits 64 bits becomes an int."""
    if _PHP_INT_KEY.fullmatch(key) and _INT64[0] <= int(key) <= _INT64[1]:
        return int(key)
    return key


def _numeric(key: int | str) -> float | int | None:
    if isinstance(key, int):
        return key
    if _PHP_NUMERIC.fullmatch(key):
        return float(key)
    return None


def _ksort_compare(a: tuple[int | str, Any], b: tuple[int | str, Any]) -> int:
    """PHP 8 `ksort` (SORT_REGULAR): numbers (int keys, numeric strings) compare as numbers,
    anything else byte for byte as strings."""
    left, right = _numeric(a[0]), _numeric(b[0])
    if left is not None and right is not None:
        return (left > right) - (left < right)
    left_bytes, right_bytes = str(a[0]).encode(), str(b[0]).encode()
    return (left_bytes > right_bytes) - (left_bytes < right_bytes)


def _php_value(value: Any, sort_keys: bool, escape_slashes: bool, escape_unicode: bool) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _php_string(value, escape_slashes, escape_unicode)
    if isinstance(value, (int, Decimal)):
        return _php_number(value)
    if isinstance(value, list):
        items: list[tuple[int | str, Any]] = list(enumerate(value))
    elif isinstance(value, dict):
        items = [(_php_key(key), item) for key, item in value.items()]
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")
    if sort_keys:
        items.sort(key=functools.cmp_to_key(_ksort_compare))
    parts = [_php_value(item, sort_keys, escape_slashes, escape_unicode) for _, item in items]
    if [key for key, _ in items] == list(range(len(items))):
        return "[" + ",".join(parts) + "]"
    keys = [_php_string(str(key), escape_slashes, escape_unicode) for key, _ in items]
    return "{" + ",".join(f"{key}:{part}" for key, part in zip(keys, parts, strict=True)) + "}"


def php_json_encode(
    value: Any, *, sort_keys: bool = False, escape_slashes: bool = True, escape_unicode: bool = True
) -> str | None:
    """PHP's `json_encode` of what its `json_decode(..., true)` made of the same JSON; None
    where PHP would fail."""
    try:
        return _php_value(value, sort_keys, escape_slashes, escape_unicode)
    except _Unencodable:
        return None


# --- raw members ---------------------------------------------------------------------------------

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constant)


def _skip(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    return match.end() if match else index


def raw_members(text: str) -> list[tuple[str, str, str]] | None:
    """The members of a top-level JSON object as (key as sent, key, value as sent); None when
    the text is not one JSON object."""
    index = _skip(text, 0)
    if text[index : index + 1] != "{":
        return None
    index = _skip(text, index + 1)
    members: list[tuple[str, str, str]] = []
    try:
        while text[index : index + 1] != "}":
            if members:
                if text[index : index + 1] != ",":
                    return None
                index = _skip(text, index + 1)
            if text[index : index + 1] != '"':
                return None
            key, end = _DECODER.raw_decode(text, index)
            key_text = text[index:end]
            index = _skip(text, end)
            if text[index : index + 1] != ":":
                return None
            index = _skip(text, index + 1)
            _, end = _DECODER.raw_decode(text, index)
            members.append((key_text, key, text[index:end]))
            index = _skip(text, end)
    except (ValueError, RecursionError):
        return None
    return members if _skip(text, index + 1) == len(text) else None


def members_without(text: str, name: str) -> str | None:
    """The object as sent with member `name` cut out: `{"k":v,...}` from the raw key and value
    text of every other member (None when `text` is not one JSON object)."""
    members = raw_members(text)
    if members is None:
        return None
    return "{" + ",".join(f"{raw}:{value}" for raw, key, value in members if key != name) + "}"
