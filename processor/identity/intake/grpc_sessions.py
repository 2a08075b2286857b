"""gRPC front end of the session API: user_enricher.v1.SessionService.

Registered through ``processor.receive.rpc``, like every method here: bytes that
are not a ``PushSessionsRequest`` and invalid sessions are INVALID_ARGUMENT, a
missing or duplicated token UNAUTHENTICATED.
"""

from __future__ import annotations

import grpc

from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.identity.intake.push import SessionIntake
from processor.metrics import PUSH_REJECTIONS, Metrics
from processor.receive import rpc
from processor.receive.auth import BearerToken

SERVICE_NAME = "user_enricher.v1.SessionService"


class SessionServicer:
    """Serves PushSessions; the bearer token travels as ``authorization`` metadata."""

    def __init__(self, intake: SessionIntake, auth: BearerToken, metrics: Metrics) -> None:
        self._intake = intake
        self._auth = auth  # checked on the metadata: exactly one authorization entry
        self._metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to register on a ``grpc.aio`` server."""
        method = rpc.unary(
            pb.PushSessionsRequest.FromString,
            self.push_sessions,
            what="a PushSessionsRequest",
            serialize=pb.PushSessionsResponse.SerializeToString,
            auth=self._auth,
            reject=self._reject,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"PushSessions": method})

    async def push_sessions(
        self, request: pb.PushSessionsRequest, context: rpc.Context
    ) -> pb.PushSessionsResponse:
        """Store the pushed sessions, all or none (InvalidInput names every bad field)."""
        return pb.PushSessionsResponse(accepted=self._intake.push(request, via="grpc"))

    def _reject(self, reason: str) -> None:
        if reason in PUSH_REJECTIONS:  # a server error is logged, not a client's refusal
            self._metrics.session_push_rejected.add(("grpc", reason))
