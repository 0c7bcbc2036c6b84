"""`relay` on uvloop, without touching relay/: measures proposed change "uvloop" as-is.

    python -m bench.uvloop_shim serve|worker ...   (the same arguments as `relay`)

asyncio.run() (the worker) and aiohttp's web.run_app() (the ingress) both create their loop
through the event-loop policy, which uvloop.install() replaces.
"""

from __future__ import annotations

import sys
import warnings

import uvloop

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    uvloop.install()

from relay.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
