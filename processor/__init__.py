"""otel-user-enricher: attaches the Open WebUI user to AgentGateway OTLP spans."""

__version__ = "0.1.0"
