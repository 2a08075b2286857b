"""Finding and normalising a span's source address (pure)."""

from __future__ import annotations

import ipaddress

from processor.correlate.memo import Computed

DEFAULT_ADDRESS_KEYS: tuple[str, ...] = (
    "src.addr",  # AgentGateway: "ip:port", IPv6 as "[fd00::7]:40312"
    "client.address",
    "network.peer.address",
    "net.peer.ip",
    "net.sock.peer.addr",
    "http.client_ip",
)

# Distinct raw values seen on a busy gateway are bounded by address x port
# churn; past this many we start over rather than grow without bound.
_CACHE_LIMIT = 65_536


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


class AddressNormalizer(Computed[str, "str | None"]):
    """Memoises :func:`normalize_ip` per raw value, and the address parse per address:
    a busy gateway's ``ip:port`` values are many (ports change), its addresses few.

    Call it with a raw value: the normalised IP, or None.
    """

    __slots__ = ("_hosts",)

    def __init__(self) -> None:
        self._hosts: Computed[str, str | None] = Computed(normalize_host, _CACHE_LIMIT)
        super().__init__(self._normalized, _CACHE_LIMIT)

    def _normalized(self, raw: str) -> str | None:
        host = host_of(raw)
        return self._hosts[host] if host is not None else None

    __call__ = Computed.__getitem__
