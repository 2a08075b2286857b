"""Per-span columns read from serialized spans in a few C calls (pure).

The spans of a request are joined with a marker after each span and parsed as
one :data:`~processor.wire.views.SpanColumns` message, which yields every
trace id, start time, attribute key and attribute value as flat lists. The
marker carries a trace id, a start time and an attribute of its own, so the
lists can be cut back into spans and checked: a span without a trace id or a
start time, or attribute keys that do not line up, make the counts disagree
and :func:`ColumnReader.read` returns None (the caller then decodes the request
in full). What the columns hold is what a full decode gives for the same spans.

Gateways write the same attributes in the same order on every span, so the keys
of one span (a *layout*) are learned once and the values of a key are sliced
out of the flat list for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import is_not
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from processor.wire.encoding import varint
from processor.wire.views import KeyList, SpanColumns

_T = TypeVar("_T")
_MARK_TRACE = b"\xff" * 16
_MARK_START = (1 << 64) - 1
_MARK_KEY = "\x00user-enricher/span-end"
_KEY_FIELD = b"\x0a" + varint(len(_MARK_KEY)) + _MARK_KEY.encode()  # KeyValue.key
_MARK_KV = _KEY_FIELD + b"\x12\x00"  # and an empty KeyValue.value
_MARK = (
    b"\x0a\x10" + _MARK_TRACE  # Span.trace_id
    + b"\x39" + _MARK_START.to_bytes(8, "little")  # Span.start_time_unix_nano
    + b"\x4a" + varint(len(_MARK_KV)) + _MARK_KV  # Span.attributes
)  # fmt: skip
_MEMO_LIMIT = 4096  # distinct attribute layouts remembered


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """One span's attribute keys: how many, and where each wanted key sits.

    Compared by identity: the reader keeps one object per distinct layout.
    """

    count: int
    positions: dict[str, int]  # wanted key -> index among the span's attributes
    duplicated: bool  # a wanted key occurs twice (read by the full decode instead)


class Columns:
    """Per span, in request order: trace id, start time, and wanted attribute values.

    ``values[key][i]`` is span ``i``'s encoded ``AnyValue`` for ``key``, or None
    when the span has no such attribute. Trace ids are read when first asked for.
    """

    __slots__ = ("_trace_ids", "starts", "values")

    def __init__(
        self,
        trace_ids: Sequence[bytes],  # every span's, each followed by the marker's
        starts: list[int],
        values: dict[str, list[bytes | None]],
    ) -> None:
        self._trace_ids: Sequence[bytes] | list[bytes] = trace_ids
        self.starts = starts
        self.values = values

    @property
    def trace_ids(self) -> list[bytes]:
        """Each span's trace id."""
        if not isinstance(self._trace_ids, list):
            self._trace_ids = _every(self._trace_ids, 0, 2)
        return self._trace_ids


class ColumnReader:
    """Reads :class:`Columns` for a fixed set of wanted keys; remembers layouts."""

    __slots__ = ("_layouts", "_repeated", "_wanted")

    def __init__(self, wanted: Sequence[str]) -> None:
        self._wanted = tuple(dict.fromkeys(wanted))
        self._layouts: dict[bytes, Layout] = {}
        self._repeated = (b"", b"")  # (one span's encoded keys, those keys for a whole batch)

    @property
    def wanted(self) -> tuple[str, ...]:
        """The attribute keys read, each once."""
        return self._wanted

    def read(self, spans: Sequence[bytes]) -> Columns | None:
        """The columns of ``spans`` (serialized Span messages), or None when they
        cannot be read this way (see the module docstring)."""
        n = len(spans)
        if not n:
            return Columns([], [], {key: [] for key in self._wanted})
        try:
            flat = flat_columns(spans)
        except DecodeError:
            return None
        trace_ids, starts, kvs = flat.trace_id, flat.start_time_unix_nano, flat.attributes
        keys = len(kvs.key)
        if len(trace_ids) != 2 * n or len(starts) != 2 * n or len(kvs.value) != keys:
            return None
        # Every span has one trace id and one start time. (A producer that wrote a
        # field twice in one span and left it out of another would shift its own
        # values between its own spans: nothing it could not write directly.)
        layouts = self._layouts_of(kvs.SerializeToString(), n, keys)
        if layouts is None:
            return None
        uniform = layouts.count(layouts[0]) == n  # by identity: one object per layout
        values = self._values(kvs.value, layouts, uniform)
        if values is None:
            return None
        return Columns(trace_ids, _every(starts, 0, 2), values)

    def _layouts_of(self, encoded: bytes, n: int, keys: int) -> list[Layout] | None:
        """Each span's layout, from the encoded keys (then values) of every span.

        The keys come first: each span's own, then the marker's. When every span
        has the first span's keys, that section is the first span's part
        repeated, which one comparison proves.
        """
        end = encoded.find(_KEY_FIELD)
        if end < 0:
            return None
        first = self._layout(encoded[:end])
        if first is not None and keys == n * (first.count + 1):
            unit = encoded[: end + len(_KEY_FIELD)]
            repeated = self._repeated
            if repeated[0] != unit or len(repeated[1]) != len(unit) * n:
                repeated = self._repeated = (unit, unit * n)  # batches repeat: build it once
            if encoded.startswith(repeated[1]):
                return [first] * n
        # The keys come first and the n-th marker key is the last of them, so the
        # values after it are not searched; they start with a value field (tag 2).
        parts = encoded.split(_KEY_FIELD, n)
        if len(parts) != n + 1 or not parts[n].startswith(b"\x12"):  # a marker key elsewhere
            return None
        layouts = []
        common, common_layout = parts[0], first  # most spans share the first's keys
        for part in parts[:n]:
            layout = common_layout if part == common else self._layout(part)
            if layout is None:
                return None
            layouts.append(layout)
        return layouts

    def _layout(self, part: bytes) -> Layout | None:
        """The layout of one span's encoded keys; None when a wanted key repeats or
        the part is not a plain list of keys."""
        layout = self._layouts.get(part)
        if layout is None:
            try:
                keys = list(KeyList.FromString(part).key)
            except DecodeError:
                return None
            if KeyList(key=keys).SerializeToString() != part:
                return None
            wanted = [(key, index) for index, key in enumerate(keys) if key in self._wanted]
            positions = dict(reversed(wanted))  # the first occurrence wins
            layout = Layout(len(keys), positions, len(positions) != len(wanted))
            if len(self._layouts) >= _MEMO_LIMIT:
                self._layouts.clear()
            self._layouts[part] = layout
        return None if layout.duplicated else layout

    def _values(
        self, flat: Sequence[bytes], layouts: list[Layout], uniform: bool
    ) -> dict[str, list[bytes | None]] | None:
        n = len(layouts)
        out: dict[str, list[bytes | None]] = {}
        if uniform:
            layout, stride = layouts[0], layouts[0].count + 1
            if len(flat) != stride * n:
                return None
            for key in self._wanted:
                at = layout.positions.get(key)
                out[key] = _every(flat, at, stride) if at is not None else [None] * n
            return out
        # Runs of spans with one layout are strided slices of the flat list, as in
        # the uniform case; gateways change layout rarely (a failed call, say).
        ends = [i for i, change in enumerate(map(is_not, layouts, layouts[1:]), 1) if change]
        out = {key: [None] * n for key in self._wanted}
        offset, first = 0, 0
        for end in (*ends, n):
            layout = layouts[first]
            stride = layout.count + 1
            stop = offset + (end - first) * stride
            for key, at in layout.positions.items():
                out[key][first:end] = flat[offset + at : stop : stride]
            offset, first = stop, end
        if offset != len(flat):
            return None
        return out


def flat_columns(spans: Sequence[bytes]) -> Any:
    """``spans`` parsed as one :data:`SpanColumns`, a marker after each; raises
    ``DecodeError``."""
    return SpanColumns.FromString(_MARK.join([*spans, b""]))


def _every(items: Sequence[_T], start: int, step: int) -> list[_T]:
    """``items[start::step]`` as a list (a protobuf container's slice already is one)."""
    got = items[start::step]
    return got if type(got) is list else list(got)


def any_value(encoded: bytes | None) -> AnyValue | None:
    """The AnyValue a column holds (None: the span has no such attribute).

    Values are not checked when the columns are read: one that does not decode
    reads as an empty AnyValue, i.e. as no usable value.
    """
    if encoded is None:
        return None
    try:
        return AnyValue.FromString(encoded)
    except DecodeError:
        return AnyValue()
