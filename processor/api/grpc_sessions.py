"""gRPC front end of the session API: user_enricher.v1.SessionService.

Like the OTLP Export handler, it takes raw bytes and decodes them itself: with a
registered deserializer grpcio answers UNKNOWN ("Unexpected DecodeError") to bytes
that are not a ``PushSessionsRequest``, where the client made the mistake and
must hear INVALID_ARGUMENT.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from processor.api.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.api.intake import SessionIntake, TokenAuth
from processor.errors import InvalidInput
from processor.metrics import Metrics
from processor.security import ReceiverAuth

SERVICE_NAME = "user_enricher.v1.SessionService"


class SessionServicer:
    """Serves PushSessions; the bearer token travels as ``authorization`` metadata."""

    def __init__(self, intake: SessionIntake, auth: TokenAuth, metrics: Metrics) -> None:
        self._intake = intake
        self._auth = ReceiverAuth(auth)
        self._metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to register on a ``grpc.aio`` server."""
        method = grpc.unary_unary_rpc_method_handler(
            self.push_sessions,
            request_deserializer=None,
            response_serializer=pb.PushSessionsResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"PushSessions": method})

    async def push_sessions(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> pb.PushSessionsResponse:
        """Store the pushed sessions, all or none."""
        # Exactly one authorization entry, as on the OTLP receiver: with two, which
        # one a proxy in front of us honoured cannot be known.
        if not self._auth.allows(context.invocation_metadata()):
            self._reject("unauthenticated")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        try:
            request = pb.PushSessionsRequest.FromString(raw)
        except DecodeError as exc:
            self._reject("invalid")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"payload is not a PushSessionsRequest: {exc}"
            )
        try:
            accepted = self._intake.push(request, via="grpc")
        except InvalidInput as exc:
            self._reject("invalid")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _details(exc))
        return pb.PushSessionsResponse(accepted=accepted)

    def _reject(self, reason: str) -> None:
        self._metrics.session_push_rejected.add(("grpc", reason))


# gRPC clients refuse trailers over 16 KiB by default; a message naming every
# problem of a 1000-session batch would exceed that and arrive as
# RESOURCE_EXHAUSTED, hiding the real error.
_MAX_PROBLEMS_SHOWN = 20


def _details(exc: InvalidInput) -> str:
    """The error text, listing at most the first few problems."""
    shown = "; ".join(str(p) for p in exc.problems[:_MAX_PROBLEMS_SHOWN])
    rest = len(exc.problems) - _MAX_PROBLEMS_SHOWN
    return f"{shown}; and {rest} more" if rest > 0 else shown
