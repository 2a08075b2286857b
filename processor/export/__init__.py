"""Export path: deliver serialized OTLP trace requests downstream, with retries.

The path is a chain of links sharing one protocol, in the style of the OpenTelemetry
Collector ``exporterhelper``: :class:`RetrySender` wraps :class:`OtlpGrpcSender`, and both
implement :class:`Sender`. Typical wiring::

    grpc_sender = OtlpGrpcSender(cfg.exporter)
    sender = RetrySender(grpc_sender, cfg.exporter.retry)
    await grpc_sender.start()
    ...
    await sender.send(request_bytes)
    ...
    await sender.shutdown()       # stop retrying first: pending backoffs raise now
    await grpc_sender.shutdown()  # then close the channel
"""

from __future__ import annotations

from typing import Protocol

from processor.export.classify import (
    SHUTDOWN_CODE,
    ExportFailed,
    Verdict,
    classify,
    retry_delay_from_trailers,
)
from processor.export.config import ExporterConfig, QueueConfig, RetryConfig
from processor.export.otlp_grpc import (
    EXPORT_METHOD,
    OtlpGrpcSender,
    PartialSuccessHook,
)
from processor.export.retry import RetryHook, RetrySender, Sleep, event_sleep


class Sender(Protocol):
    """One link of the export chain."""

    async def send(self, payload: bytes) -> None:
        """Deliver one serialized ExportTraceServiceRequest; raise DownstreamError on failure."""
        ...


__all__ = [
    "EXPORT_METHOD",
    "SHUTDOWN_CODE",
    "ExportFailed",
    "ExporterConfig",
    "OtlpGrpcSender",
    "PartialSuccessHook",
    "QueueConfig",
    "RetryConfig",
    "RetryHook",
    "RetrySender",
    "Sender",
    "Sleep",
    "Verdict",
    "classify",
    "event_sleep",
    "retry_delay_from_trailers",
]
