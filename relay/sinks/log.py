"""`log`: writes each event to the relay's own JSON log. The default sink of `relay dev`."""

from __future__ import annotations

from typing import Literal

from relay.config.types import SinkConfig
from relay.events import StoredEvent
from relay.logs import get_logger
from relay.sinks.base import Delivered, Outcome, Sink
from relay.sinks.client import SinkClient

log = get_logger("relay.sink.log")


class LogSinkConfig(SinkConfig):
    type: Literal["log"]
    full: bool = False  # also log the provider's raw `data`


class LogSink(Sink):
    kind = "log"
    Config = LogSinkConfig
    config: LogSinkConfig

    async def deliver(self, client: SinkClient, event: StoredEvent, attempt: int) -> Outcome:
        body = event.body
        fields = {k: v for k, v in body.items() if k != "data" or self.config.full}
        log.info(
            "payment event",
            sink=self.name,
            event_id=event.id,
            attempt=attempt,
            payment_event=fields,
        )
        return Delivered()
