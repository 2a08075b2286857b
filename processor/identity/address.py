"""The canonical text of an IP address: the key sessions are stored and looked up under (pure)."""

from __future__ import annotations

import ipaddress


def normalize_ip(raw: str) -> str | None:
    """Return the canonical IP text of ``raw`` ("ip", "ip:port", "[v6]:port"), or None.

    IPv4-mapped IPv6 addresses become plain IPv4 so that a dual-stack listener and
    an IPv4 session push agree on one key.
    """
    host = host_of(raw)
    return normalize_host(host) if host is not None else None


def host_of(raw: str) -> str | None:
    """The address part of ``raw`` without brackets or port, not yet checked."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != ":"):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    if text != "".join(text.split()):  # whitespace inside, e.g. in a scope id
        return None
    return text


def normalize_host(text: str) -> str | None:
    """The canonical IP text of an address without port, or None when it is none."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
