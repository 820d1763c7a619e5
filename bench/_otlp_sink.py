"""A stand-in for an OpenTelemetry Collector: an OTLP/HTTP traces receiver that counts.

A node with ``trace_exporter = "otlp"`` posts protobuf ``ExportTraceServiceRequest``
batches to ``/v1/traces``; this accepts them (``200`` with an empty
``ExportTraceServiceResponse``), counts the requests and the spans in them, and keeps
nothing else. It runs on the project's HTTP server (anyio + h11) on a free loopback port,
inside the caller's event loop, so the node pays what it would pay a real collector:
encoding and posting its batches, from its exporter thread::

    async with OtlpSink() as sink:
        ... ICESHOP_TRACE_ENDPOINT = sink.endpoint ...
        print(sink.spans)
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import anyio
import anyio.abc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from iceshop.notify.http11 import HTTPServer, Request, Response

__all__ = ["OtlpSink"]

_PROTOBUF = "application/x-protobuf"


class OtlpSink:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests = 0
        self.spans = 0
        self.refused = 0
        self._server = HTTPServer(self._handle, max_body=32 * 1024 * 1024)
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/v1/traces"

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self.port = await self._tg.start(self._server.serve, self.host, 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(exc_type, exc, tb)

    async def _handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != "/v1/traces":
            self.refused += 1
            return Response(status=404)
        try:
            export = ExportTraceServiceRequest.FromString(request.body)
        except Exception:  # a body that is not the protobuf: the exporter's bug
            self.refused += 1
            return Response(status=400)
        self.requests += 1
        self.spans += sum(
            len(scope.spans) for spans in export.resource_spans for scope in spans.scope_spans
        )
        return Response(status=200, body=b"", content_type=_PROTOBUF)
