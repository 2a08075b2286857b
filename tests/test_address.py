"""Tables for source-address extraction and normalisation."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.correlate.address import (
    DEFAULT_ADDRESS_KEYS,
    AddressNormalizer,
    normalize_ip,
)
from processor.correlate.find import AttributeFinder


def kv(key: str, value: str | int) -> KeyValue:
    """A string or int attribute."""
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.0.0.5:40312", "10.0.0.5"),
        ("10.0.0.5", "10.0.0.5"),
        ("[fd00::7]:40312", "fd00::7"),
        ("[FD00:0:0::7]:1", "fd00::7"),
        ("fd00::7", "fd00::7"),
        ("::1", "::1"),
        ("[::ffff:172.18.0.5]:40318", "172.18.0.5"),
        ("::ffff:172.18.0.5", "172.18.0.5"),
        (" 10.0.0.5:1 ", "10.0.0.5"),
        ("", None),
        ("garbage", None),
        ("10.0.0.256:80", None),
        ("[fd00::7", None),
        ("[fd00::7]x", None),
        ("[fd00::7]:", "fd00::7"),
        ("host.example:443", None),
        ("10.0.0.5:80:90", None),
    ],
)
def test_normalize_ip(raw: str, expected: str | None) -> None:
    """Ports and brackets are dropped, mapped IPv6 becomes IPv4, and garbage is None."""
    assert normalize_ip(raw) == expected


def test_normalizer_caches_and_agrees() -> None:
    """The memoising normaliser returns what normalize_ip returns, repeatedly."""
    norm = AddressNormalizer()
    for raw in ("10.0.0.5:1", "[::ffff:10.0.0.5]:2", "x", "10.0.0.5:1"):
        assert norm(raw) == normalize_ip(raw)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ([kv("http.method", "POST"), kv("src.addr", "10.0.0.5:1")], "10.0.0.5:1"),
        ([kv("client.address", "10.0.0.9"), kv("src.addr", "10.0.0.5:1")], "10.0.0.5:1"),
        ([kv("net.peer.ip", "10.0.0.8"), kv("client.address", "10.0.0.9")], "10.0.0.9"),
        ([kv("http.client_ip", "10.0.0.7")], "10.0.0.7"),
        ([kv("net.sock.peer.addr", "10.0.0.6"), kv("http.client_ip", "10.0.0.7")], "10.0.0.6"),
        ([kv("src.addr", ""), kv("client.address", "10.0.0.9")], "10.0.0.9"),
        ([kv("src.addr", 1234)], None),
        ([kv("http.method", "POST")], None),
        ([], None),
    ],
)
def test_find_address_priority(attributes: list[KeyValue], expected: str | None) -> None:
    """The first key in priority order that has a string value wins, wherever it sits."""
    assert AttributeFinder(DEFAULT_ADDRESS_KEYS).find(attributes) == expected


def test_find_address_hint_never_changes_the_answer() -> None:
    """After learning a position, a span with a different layout still gets the right key."""
    finder = AttributeFinder(DEFAULT_ADDRESS_KEYS)
    assert finder.find([kv("a", "x"), kv("b", "y"), kv("src.addr", "10.0.0.1:1")]) == "10.0.0.1:1"
    assert finder.find([kv("a", "x"), kv("b", "y"), kv("src.addr", "10.0.0.2:1")]) == "10.0.0.2:1"
    moved = [kv("src.addr", "10.0.0.3:1"), kv("a", "x"), kv("client.address", "10.0.0.4")]
    assert finder.find(moved) == "10.0.0.3:1"
    lower_at_hint = [kv("a", "x"), kv("b", "y"), kv("client.address", "10.0.0.4")]
    assert finder.find(lower_at_hint) == "10.0.0.4"
    assert finder.find([kv("a", "x")]) is None


def test_custom_key_order() -> None:
    """A configured order replaces the default one."""
    finder = AttributeFinder(("client.address", "src.addr"))
    attrs = [kv("src.addr", "10.0.0.5:1"), kv("client.address", "10.0.0.9")]
    assert finder.find(attrs) == "10.0.0.9"
