"""The runtime on NATS: a real server to run, a connection, actors served on subjects
and an outbox sink into JetStream. Nothing here knows any application: subjects,
prefixes and codecs are parameters.

::

    async with NatsServer() as server, NatsTransport([server.url]) as transport:
        async with system, NatsBinding(system, transport) as binding:
            await binding.serve("cart", "shop.carts.*.>", route, encode)
"""

from .binding import BindingStats, Encode, Handler, NatsBinding, Route, Routed
from .errors import map_error, mapped_errors
from .headers import TRACE_HEADERS, get_header, lower_names, trace_headers
from .outbox import CorePublisher, JetStreamOutbox
from .pull import PullBatches
from .server import (
    NatsServer,
    NatsServerError,
    NatsServerNotFound,
    NatsServerStartFailed,
    PortInUse,
    find_nats_server,
    free_port,
)
from .transport import Msg, MsgHandler, NatsTransport, Subscription

__all__ = [
    "TRACE_HEADERS",
    "BindingStats",
    "CorePublisher",
    "Encode",
    "Handler",
    "JetStreamOutbox",
    "Msg",
    "MsgHandler",
    "NatsBinding",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFound",
    "NatsServerStartFailed",
    "NatsTransport",
    "PortInUse",
    "PullBatches",
    "Route",
    "Routed",
    "Subscription",
    "find_nats_server",
    "free_port",
    "get_header",
    "lower_names",
    "map_error",
    "mapped_errors",
    "trace_headers",
]
