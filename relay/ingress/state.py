"""What the ingress app holds (aiohttp `AppKey`s): set up by app.py, read by app.py and admin.py.

Its own module so that the routes of app.py and of admin.py need not import each other.
"""

from __future__ import annotations

from aiohttp import web

from relay.config.model import LoadedConfig
from relay.ingress.guard import RejectionLog
from relay.ingress.shedding import IngressGuard
from relay.queue import InboundStore

CONFIG = web.AppKey("config", LoadedConfig)
REDIS = web.AppKey("redis", object)
STORE = web.AppKey("store", InboundStore)
REJECTIONS = web.AppKey("rejections", RejectionLog)
SOURCES = web.AppKey("sources", dict)
GUARD = web.AppKey("guard", IngressGuard)
