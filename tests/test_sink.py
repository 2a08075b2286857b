"""The in-process OTLP sink the demo, the benchmarks and the tests read spans from."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.tools.sink import TraceSink


def _request(*services: str | None) -> ExportTraceServiceRequest:
    """One resource per entry (None: a resource without service.name), one span each."""
    request = ExportTraceServiceRequest()
    for i, service in enumerate(services):
        rs = request.resource_spans.add()
        if service is not None:
            rs.resource.attributes.append(
                KeyValue(key="service.name", value=AnyValue(string_value=service))
            )
        rs.scope_spans.add().spans.add(name=f"span {i}")
    return request


def test_spans_of_one_service_in_arrival_order() -> None:
    """``spans(service)`` keeps the spans whose resource names that service.name;
    ``spans()`` keeps them all."""
    sink = TraceSink()
    sink.requests += [_request("agentgateway", "open-webui"), _request(None, "agentgateway")]
    assert [s.name for s in sink.spans("agentgateway")] == ["span 0", "span 1"]
    assert [s.name for s in sink.spans("open-webui")] == ["span 1"]
    assert [s.name for s in sink.spans()] == ["span 0", "span 1", "span 0", "span 1"]
