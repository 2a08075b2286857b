"""Send link of the export chain: OTLP/gRPC ``TraceService/Export``.

With compression, calls go through a blocking channel from worker threads:
gRPC compresses each message in the calling thread without the GIL, so gzip
runs beside the event loop instead of stopping it (a 270 KB request takes a few
milliseconds to compress). Without compression the ``grpc.aio`` channel serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.errors import ConfigError, Problem
from processor.export.classify import (
    SHUTDOWN_CODE,
    ExportFailed,
    classify,
    retry_delay_from_trailers,
)
from processor.export.config import ExporterConfig

_log = structlog.get_logger(__name__)

# OTLP spec, "OTLP/gRPC": the unary method every trace receiver implements.
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_COMPRESSION = {"gzip": grpc.Compression.Gzip, "none": grpc.Compression.NoCompression}
_SEND_THREADS = 32  # blocking calls in flight at most (more than the queue's consumers)

# on_partial_success(rejected_spans, error_message): called when the server accepted
# the request but rejected some spans (OTLP spec, "Partial Success").
PartialSuccessHook = Callable[[int, str], None]


# The largest request this sender hands gRPC (the merged batches stay far below it).
MAX_SEND_BYTES = 64 * 1024 * 1024


class OtlpGrpcSender:
    """Sender exporting serialized ``ExportTraceServiceRequest`` bytes over one gRPC channel.

    ``send`` raises :class:`ExportFailed` (a DownstreamError) classified per the OTLP spec.
    Spans the server rejects in a partial success are not an error: they are logged
    (``export_partial_success``), added to :attr:`rejected_spans_total` and passed to
    ``on_partial_success``.
    """

    def __init__(
        self,
        settings: ExporterConfig,
        *,
        on_partial_success: PartialSuccessHook | None = None,
    ) -> None:
        self._settings = settings
        self._on_partial_success = on_partial_success
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items()) or None
        self._channel: grpc.aio.Channel | grpc.Channel | None = None
        self._export: Callable[[bytes, float | None], Awaitable[Any]] | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._rejected_spans_total = 0

    @property
    def rejected_spans_total(self) -> int:
        """Spans the server rejected in partial successes since construction."""
        return self._rejected_spans_total

    async def start(self) -> None:
        """Open the channel; raises ConfigError if ``ca_file`` cannot be read."""
        if self._channel is not None:
            return
        credentials = await self._credentials()
        # request_serializer=None: the payload is already a serialized request and goes
        # on the wire as-is; only the (tiny) response is decoded.
        method = {
            "request_serializer": None,
            "response_deserializer": ExportTraceServiceResponse.FromString,
        }
        metadata = self._metadata
        if self._settings.compression == "none":
            channel = self._open_channel(credentials)
            call = channel.unary_unary(EXPORT_METHOD, **method)
            self._channel = channel

            def export(payload: bytes, timeout: float | None) -> Awaitable[Any]:
                return call(payload, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

        else:
            blocking = self._open_blocking_channel(credentials)
            blocking_call = blocking.unary_unary(EXPORT_METHOD, **method)
            threads = self._threads = ThreadPoolExecutor(_SEND_THREADS, "otlp-export")
            self._channel = blocking
            loop = asyncio.get_running_loop()

            def export(payload: bytes, timeout: float | None) -> Awaitable[Any]:
                return loop.run_in_executor(
                    threads, lambda: blocking_call(payload, timeout=timeout, metadata=metadata)
                )

        self._export = export

    async def send(self, payload: bytes) -> None:
        """Export one serialized request; raise ExportFailed on any RPC failure."""
        export = self._export
        if export is None:
            raise ExportFailed("exporter is not running", code=SHUTDOWN_CODE, retryable=False)
        timeout = self._settings.timeout
        try:
            response = await export(payload, timeout)
        except grpc.RpcError as err:  # AioRpcError too
            raise _export_failed(err) from err
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this send was cancelled
            # The aio channel closed under the call (shutdown): as the blocking one says.
            raise ExportFailed(
                "OTLP export failed: CANCELLED: the channel closed",
                code="CANCELLED",
                retryable=True,
            ) from None
        if response is not None:  # None: an OK answer whose body did not parse
            self._note_partial_success(response)

    async def shutdown(self, grace: float | None = None) -> None:
        """Close the channel, cancelling in-flight calls after ``grace`` seconds."""
        channel, self._channel, self._export = self._channel, None, None
        threads, self._threads = self._threads, None
        if isinstance(channel, grpc.aio.Channel):
            await channel.close(grace)
        elif channel is not None:
            if threads is not None and grace:
                # Let calls in flight finish for up to ``grace``, then cancel them.
                waiter = asyncio.get_running_loop().run_in_executor(
                    None, lambda: threads.shutdown(wait=True)
                )
                await asyncio.wait([waiter], timeout=grace)
            channel.close()
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)

    async def _credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (system roots or ``ca_file``), or None for plaintext."""
        if self._settings.insecure:
            return None
        ca_file = self._settings.ca_file
        if ca_file is None:
            return grpc.ssl_channel_credentials()
        try:
            roots = await asyncio.to_thread(Path(ca_file).read_bytes)
        except OSError as err:
            problem = Problem("exporter.ca_file", f"cannot read {ca_file}: {err.strerror}")
            raise ConfigError([problem]) from err
        return grpc.ssl_channel_credentials(root_certificates=roots)

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        """Create the channel with compression and large message limits."""
        options = [
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.primary_user_agent", "otel-user-enricher"),
        ]
        compression = _COMPRESSION[self._settings.compression]
        target = self._settings.endpoint
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options, compression=compression)
        return grpc.aio.secure_channel(
            target, credentials, options=options, compression=compression
        )

    def _open_blocking_channel(self, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
        """The same channel, blocking (used from worker threads)."""
        options = [
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.primary_user_agent", "otel-user-enricher"),
        ]
        compression = _COMPRESSION[self._settings.compression]
        target = self._settings.endpoint
        if credentials is None:
            return grpc.insecure_channel(target, options=options, compression=compression)
        return grpc.secure_channel(target, credentials, options=options, compression=compression)

    def _note_partial_success(self, response: ExportTraceServiceResponse) -> None:
        """Log and count spans rejected in a partial success (not retried, per the spec)."""
        # OTLP spec, "Partial Success": the client MUST NOT retry the request.
        rejected = int(response.partial_success.rejected_spans)
        if rejected <= 0:
            return
        message = str(response.partial_success.error_message)
        self._rejected_spans_total += rejected
        _log.warning("export_partial_success", rejected_spans=rejected, error_message=message)
        if self._on_partial_success is not None:
            self._on_partial_success(rejected, message)


def _export_failed(err: grpc.RpcError) -> ExportFailed:
    """Translate an RPC error into an ExportFailed classified per the OTLP spec."""
    code = err.code()
    verdict = classify(code, retry_delay_from_trailers(err.trailing_metadata()))
    return ExportFailed(
        f"OTLP export failed: {code.name}: {err.details()}",
        code=code.name,
        retryable=verdict.retryable,
        min_delay=verdict.min_delay,
    )
