"""The `alerts:` section (SPEC 12): which sinks receive operational alerts, and the rules.

Every rule is on by default with the thresholds of SPEC 12; each takes its own threshold, or
`off` (or `false`) to switch it off, or `on` (`true`) for the default:

```yaml
alerts:
  to: [ops]                  # discord, slack or http sinks of this config
  repeat: 1h                 # at most one message per rule and subject per repeat
  sink_failing: 15m          # no successful delivery for that long while deliveries are due
  sink_gone: on              # the sink's endpoint answered 404/410
  dead_letters: 1            # new dead letters since the last alert
  bad_signatures: 5/10m      # rejections for a bad signature or token, per source
  oldest_waiting: 5m         # the oldest job waiting to run
  no_worker: 1m              # no worker heartbeat for that long
  reconciled: on             # a payment found only by reconciliation: its webhook was missed
  redis_memory: 80%          # of maxmemory; also a policy other than noeviction
```

YAML reads a bare `off` as false, so both spellings mean the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field

from relay.config.types import Duration, Strict, parse_duration

if TYPE_CHECKING:
    from relay.config.model import RelayConfig

RULES = (
    "sink_failing",
    "sink_gone",
    "dead_letters",
    "bad_signatures",
    "oldest_waiting",
    "no_worker",
    "reconciled",
    "redis_memory",
)
ALERT_SINK_TYPES = ("discord", "slack", "http")
BAD_SIGNATURES_MAX_COUNT = 500  # relay.keys.AUTH_FAILURES_CAP: the ingress keeps this many
BAD_SIGNATURES_MAX_WINDOW_S = 3600.0  # relay.keys.AUTH_FAILURES_TTL_S
UNKNOWN_RULE = f"unknown rule (rules: {', '.join(RULES)}; other keys: to, repeat, interval)"

_OFF = ("off", "false", "no")
_ON = ("on", "true", "yes")


def _word(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


def _rule(parse: Callable[[Any], Any], default: Any) -> BeforeValidator:
    """A rule's value: `off`/false -> None (switched off), `on`/true -> the default, else
    its threshold as `parse` reads it (a ValueError is the config error, with its path)."""

    def check(value: Any) -> Any:
        if value is None or value is False or _word(value) in _OFF:
            return None
        if value is True or _word(value) in _ON:
            return default
        return parse(value)

    return BeforeValidator(check)


def _switch(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if _word(value) in _OFF:
        return False
    if _word(value) in _ON:
        return True
    raise ValueError(f"not on or off: {value!r}")


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("a threshold must be more than 0 (use off to switch the rule off)")
    return seconds


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"not a count: {value!r} (a whole number from 1, or off)")


def _count_window(value: Any) -> dict[str, float]:
    """`5/10m`: at least 5 within 10 minutes (a bare count means within 10 minutes)."""
    bare = isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    if bare and not isinstance(value, bool):
        count, per = _count(value), 600.0
    elif isinstance(value, str):
        head, _, tail = value.partition("/")
        tail = tail.strip()
        if tail and tail[0].isalpha():
            tail = "1" + tail  # "5/m" reads as 5 per 1m
        try:
            count, per = _count(head), _positive_duration(tail)
        except ValueError:
            raise ValueError(f"not a count per duration: {value!r} (use e.g. 5/10m)") from None
    else:
        raise ValueError(f"not a count per duration: {value!r} (use e.g. 5/10m)")
    if count > BAD_SIGNATURES_MAX_COUNT:
        raise ValueError(f"at most {BAD_SIGNATURES_MAX_COUNT} (the ingress keeps that many)")
    if per > BAD_SIGNATURES_MAX_WINDOW_S:
        raise ValueError("the window can be at most 1h")
    return {"count": count, "per": per}


def _percent(value: Any) -> float:
    """`80%`, or a fraction (`0.8`) or a percentage (`80`) as a number -> 0.8."""
    text = _word(value)
    try:
        if text is not None:
            fraction = float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            fraction = float(value)
        else:
            raise ValueError  # noqa: TRY301 - one message for every shape
        if 1 < fraction <= 100 and not (text or "").endswith("%"):
            fraction /= 100  # `80` means 80%
    except ValueError:
        raise ValueError(f"not a percentage: {value!r} (use e.g. 80%)") from None
    if not 0.01 <= fraction <= 1:
        raise ValueError(f"not a percentage from 1% to 100%: {value!r}")
    return fraction


class CountWindow(Strict):
    count: int = Field(ge=1)
    per: float = Field(gt=0)


Switch = Annotated[bool, BeforeValidator(_switch)]


class AlertsConfig(Strict):
    to: list[str] = Field(default_factory=list)
    repeat: Duration = Field(default=3600.0, gt=0)
    interval: Duration = Field(default=5.0, ge=0.05, le=300.0)  # how often the rules run
    sink_failing: Annotated[float | None, _rule(_positive_duration, 900.0)] = 900.0
    sink_gone: Switch = True
    dead_letters: Annotated[int | None, _rule(_count, 1)] = 1
    bad_signatures: Annotated[
        CountWindow | None, _rule(_count_window, {"count": 5, "per": 600.0})
    ] = CountWindow(count=5, per=600.0)
    oldest_waiting: Annotated[float | None, _rule(_positive_duration, 300.0)] = 300.0
    no_worker: Annotated[float | None, _rule(_positive_duration, 60.0)] = 60.0
    reconciled: Switch = True
    redis_memory: Annotated[float | None, _rule(_percent, 0.8)] = 0.8

    @property
    def auth_window_s(self) -> float:
        """The bad-signature window `relay status` counts over (the default while off)."""
        return self.bad_signatures.per if self.bad_signatures else 600.0


def alert_checks(config: RelayConfig) -> list[tuple[str, str]]:
    """`alerts.to` names sinks of this config that can carry an alert."""
    errors: list[tuple[str, str]] = []
    for index, name in enumerate(config.alerts.to):
        sink = config.sinks.get(name)
        where = f"alerts.to[{index}]"
        if sink is None:
            errors.append((where, f"unknown sink {name!r}"))
        elif sink.type not in ALERT_SINK_TYPES:
            errors.append(
                (where, f"sink {name!r} is a {sink.type} sink: alerts go to discord, slack or http")
            )
    return errors


__all__ = ["RULES", "UNKNOWN_RULE", "AlertsConfig", "CountWindow", "alert_checks"]
