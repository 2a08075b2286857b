"""Finding and normalising a span's source address (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

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
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class AddressNormalizer:
    """Memoises :func:`normalize_ip`, since one gateway sends few distinct values."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, str | None] = {}

    def __call__(self, raw: str) -> str | None:
        """Return the normalised IP for ``raw`` (cached)."""
        try:
            return self._cache[raw]
        except KeyError:
            pass
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        ip = self._cache[raw] = normalize_ip(raw)
        return ip


class AddressFinder:
    """Finds the highest-priority address attribute of a span, fast on uniform traffic.

    A gateway writes its attributes in the same order on every span, so the index
    where the first-priority key was found last time is tried first; a miss falls
    back to a full scan. The result is the same either way.
    """

    __slots__ = ("_first", "_hint", "_rank")

    def __init__(self, keys: Sequence[str]) -> None:
        self._rank = {k: i for i, k in enumerate(keys)}
        self._first = keys[0]
        self._hint = 0

    def find(self, attributes: Sequence[KeyValue]) -> str | None:
        """Return the raw value of the first key (in priority order) present with a string."""
        try:
            kv = attributes[self._hint]
            if kv.key == self._first and kv.value.string_value:
                return kv.value.string_value
        except IndexError:
            pass
        return self._scan(attributes)

    def _scan(self, attributes: Sequence[KeyValue]) -> str | None:
        best: str | None = None
        best_rank = len(self._rank)
        for index, kv in enumerate(attributes):
            r = self._rank.get(kv.key)
            if r is None or r >= best_rank:
                continue
            value = kv.value.string_value
            if value:
                best, best_rank = value, r
                if r == 0:
                    self._hint = index
                    break
        return best
