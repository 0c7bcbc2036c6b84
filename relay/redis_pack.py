"""Pack Redis commands with hiredis's C packer instead of redis-py's Python one.

redis-py 5's asyncio connections build every command in Python (`pack_command` encodes and
joins each argument); with the relay's script calls of 20-40 arguments that was a tenth of a
worker's CPU in the benchmark's profile (docs/benchmarks.md). redis-py's sync client already
packs with `hiredis.pack_command` when hiredis is installed (redis/connection.py,
`HiredisRespSerializer`); its asyncio client does not, so these classes do the same for it.
The bytes are identical (tests/test_redis_pack.py); a value hiredis cannot pack raises
redis-py's own DataError.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import DataError


class HiredisPacking(AbstractConnection):
    """Overrides `pack_command` (pipelines call it for each command too)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a command name with a space ("CONFIG GET") is sent as two words.
        head = args[0]
        if isinstance(head, str):
            args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # None, bool, other objects: as redis-py's Encoder refuses
            raise DataError(str(exc)) from exc


class FastConnection(HiredisPacking, Connection):
    pass


class FastSSLConnection(HiredisPacking, SSLConnection):
    pass


class FastUnixConnection(HiredisPacking, UnixDomainSocketConnection):
    pass


class FastSentinelConnection(HiredisPacking, SentinelManagedConnection):
    pass


_FAST: dict[type[Any], type[Any]] = {
    Connection: FastConnection,
    SSLConnection: FastSSLConnection,
    UnixDomainSocketConnection: FastUnixConnection,
    SentinelManagedConnection: FastSentinelConnection,
}


def use_hiredis_packing(client: Any) -> None:
    """Make `client`'s pool open its connections with the hiredis packer (before it opens
    any: the pool makes connections lazily). A class not known here is left as it is."""
    pool = client.connection_pool
    pool.connection_class = _FAST.get(pool.connection_class, pool.connection_class)
