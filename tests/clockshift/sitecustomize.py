"""Tests only: shift this Python process's wall clock by $RELAY_TEST_CLOCK_SHIFT_S seconds.

With this directory first on PYTHONPATH, `site` imports this module at start-up, before any
program code, so `from time import time` (arq) and `from datetime import datetime` get the
shifted versions. tests/processes.py `RelayProcess(..., clock_shift_s=N)` sets both up.
Without the variable (or with 0) nothing is changed.

Shifted (the wall clock as Python code reads it):
- time.time, time.time_ns, time.clock_gettime(_ns) for CLOCK_REALTIME and CLOCK_TAI;
- time.gmtime, localtime, ctime, asctime, strftime when given no time;
- datetime.datetime.now, utcnow, today and datetime.date.today. date.today and datetime.today
  call time.time() themselves (_datetimemodule.c `time_time`); datetime.now and utcnow read the
  C clock directly, so those two are replaced on the datetime type itself (see below).

Not shifted, on purpose or out of reach:
- monotonic clocks: time.monotonic, perf_counter, process_time, asyncio's and uvloop's
  loop.time(); they measure intervals and must not move;
- clocks outside Python code: Redis's TIME (the point of the tests), OpenSSL's certificate
  checks, file timestamps from the kernel, C extensions reading the clock themselves;
- a module that bound a clock function before site ran (none of ours can).
"""

from __future__ import annotations

import os
import sys


def _install(shift_s: float) -> None:
    import datetime as _dt
    import time as _time

    real_time = _time.time
    real_time_ns = _time.time_ns
    real_clock_gettime = _time.clock_gettime
    real_clock_gettime_ns = _time.clock_gettime_ns
    real_gmtime, real_localtime = _time.gmtime, _time.localtime
    real_ctime, real_asctime, real_strftime = _time.ctime, _time.asctime, _time.strftime
    shift_ns = round(shift_s * 1e9)
    wall_clocks = {
        getattr(_time, name) for name in ("CLOCK_REALTIME", "CLOCK_TAI") if hasattr(_time, name)
    }

    def time() -> float:
        return real_time() + shift_s

    def time_ns() -> int:
        return real_time_ns() + shift_ns

    def clock_gettime(clk_id: int) -> float:
        return real_clock_gettime(clk_id) + (shift_s if clk_id in wall_clocks else 0.0)

    def clock_gettime_ns(clk_id: int) -> int:
        return real_clock_gettime_ns(clk_id) + (shift_ns if clk_id in wall_clocks else 0)

    def gmtime(secs: float | None = None) -> _time.struct_time:
        return real_gmtime(time() if secs is None else secs)

    def localtime(secs: float | None = None) -> _time.struct_time:
        return real_localtime(time() if secs is None else secs)

    def ctime(secs: float | None = None) -> str:
        return real_ctime(time() if secs is None else secs)

    def asctime(t: object = None) -> str:
        return real_asctime(localtime() if t is None else t)  # type: ignore[arg-type]

    def strftime(format: str, t: object = None) -> str:
        return real_strftime(format, localtime() if t is None else t)  # type: ignore[arg-type]

    for fn in (
        time,
        time_ns,
        clock_gettime,
        clock_gettime_ns,
        gmtime,
        localtime,
        ctime,
        asctime,
        strftime,
    ):
        fn.__qualname__ = fn.__name__
        setattr(_time, fn.__name__, fn)

    # datetime.now/utcnow read the C clock: replace them on the datetime type itself, so every
    # datetime stays a plain datetime (a stand-in subclass breaks exact type checks: msgpack's
    # PyDateTime_CheckExact, yaml's representer table, Cython's size check).
    def now(cls: type[_dt.datetime], tz: _dt.tzinfo | None = None) -> _dt.datetime:
        return cls.fromtimestamp(time(), tz)

    def utcnow(cls: type[_dt.datetime]) -> _dt.datetime:
        return cls.fromtimestamp(time(), _dt.UTC).replace(tzinfo=None)

    for fn in (now, utcnow):
        _set_type_attribute(_dt.datetime, fn.__name__, classmethod(fn))
    if _dt.datetime.now.__func__ is not now:  # type: ignore[attr-defined]
        raise SystemExit("clockshift: could not replace datetime.datetime.now")


def _set_type_attribute(cls: type, name: str, value: object) -> None:
    """Set an attribute on a built-in (immutable) type, which `setattr` refuses: write its
    __dict__ (the dict behind the mappingproxy) and tell the type cache (CPython 3.11)."""
    import ctypes
    import gc

    (namespace,) = gc.get_referents(cls.__dict__)
    namespace[name] = value
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))


def _chain_next_sitecustomize() -> None:
    """Run the sitecustomize this one shadows, if the interpreter has one (Debian's does)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or spec.origin == __file__:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_raw = os.environ.get("RELAY_TEST_CLOCK_SHIFT_S", "").strip()
if _raw:
    try:
        _shift = float(_raw)
    except ValueError:
        # Not a silent no-op: a test that thinks its clock is shifted must not pass unshifted.
        raise SystemExit(f"RELAY_TEST_CLOCK_SHIFT_S={_raw!r} is not a number of seconds") from None
    if _shift:
        _install(_shift)
_chain_next_sitecustomize()
