"""Finding and normalising a span's source address (pure).

The canonical form itself lives in :mod:`processor.identity.address`, shared with
the identity sources that store sessions under it.
"""

from __future__ import annotations

from processor.identity.address import host_of, normalize_host, normalize_ip
from processor.wire.memo import Computed

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


__all__ = ["DEFAULT_ADDRESS_KEYS", "AddressNormalizer", "host_of", "normalize_host", "normalize_ip"]


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
