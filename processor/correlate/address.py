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
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class AddressNormalizer(Computed[str, "str | None"]):
    """Memoises :func:`normalize_ip`, since one gateway sends few distinct values.

    Call it with a raw value: the normalised IP, or None.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(normalize_ip, _CACHE_LIMIT)

    __call__ = Computed.__getitem__
