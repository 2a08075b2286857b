"""The TLS context both exporters connect with (gRPC's own HTTP/2 client and OTLP/HTTP)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from processor.errors import ConfigError, Problem
from processor.export.config import ExporterConfig


async def client_context(
    settings: ExporterConfig, alpn: Sequence[str] = ()
) -> ssl.SSLContext | None:
    """A verifying context trusting ``ca_file`` (else the system roots) and offering
    ``alpn``; None for a plaintext endpoint. ConfigError naming ``exporter.ca_file``
    when that file cannot be read or holds no certificate."""
    if settings.insecure:
        return None
    ca_file = settings.ca_file
    try:
        context = await asyncio.to_thread(ssl.create_default_context, cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        problem = Problem("exporter.ca_file", f"cannot read {ca_file}: {reason}")
        raise ConfigError([problem]) from err
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
