"""The hold buffer by request: groups, runs of them, and the trace index (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processor.correlate.hold import HeldGroup, HoldBuffer, Piece
from processor.wire.encoding import Origin

ORIGIN = Origin(None, "", None, "")


def group(*traces: int, deadline: int = 10, tag: int = 0) -> HeldGroup:
    """A group of one span per trace number (the span bytes are the trace number)."""
    ids = [bytes([t]) * 16 for t in traces]
    n = len(traces)
    return HeldGroup(
        [bytes([t]) for t in traces],
        [ORIGIN] * n,
        ids,
        ["10.0.0.1"] * n,
        list(range(n)),
        [""] * n,
        deadline,
        tag,
    )


def spans(pieces: list) -> list[int]:  # type: ignore[type-arg]
    """The trace numbers of released pieces, in release order."""
    return [p.group.spans[i][0] for p in pieces for i in p.indexes]


def test_a_full_buffer_forces_out_the_oldest_spans_even_part_of_a_group() -> None:
    """max_held_spans keeps its meaning: the oldest spans leave, one by one if need be."""
    hold = HoldBuffer(3)
    assert hold.add(group(1, 2)) == []
    forced = hold.add(group(3, 4))
    assert spans(forced) == [1]
    assert len(hold) == 3
    forced = hold.add(group(5, 6, 7))
    assert spans(forced) == [2, 3, 4]
    assert len(hold) == 3
    assert spans(hold.drain()) == [5, 6, 7]
    assert len(hold) == 0


def test_a_group_larger_than_the_buffer_keeps_its_latest_spans() -> None:
    """A request bigger than the whole buffer: what does not fit leaves at once."""
    hold = HoldBuffer(2)
    assert spans(hold.add(group(1, 2, 3, 4))) == [1, 2]
    assert spans(hold.due(100)) == [3, 4]


def test_deadlines_release_whole_groups_in_arrival_order() -> None:
    """Groups leave when their deadline has passed, not before."""
    hold = HoldBuffer(100)
    hold.add(group(1, 2, deadline=10))
    hold.add(group(3, deadline=20))
    assert hold.due(9) == []
    assert spans(hold.due(10)) == [1, 2]
    assert spans(hold.due(25)) == [3]
    assert hold._by_trace == {}  # nothing left indexed


def test_a_trace_releases_its_spans_from_every_group_and_only_those() -> None:
    """One trace id across two requests: both spans leave, the others stay held."""
    hold = HoldBuffer(100)
    first, second = group(1, 2, 1), group(3, 1)
    hold.add(first)
    hold.add(second)
    released = hold.trace(bytes([1]) * 16)
    assert [(p.group is first, p.indexes) for p in released] == [(True, [0, 2]), (False, [1])]
    assert len(hold) == 2
    assert hold.trace(bytes([1]) * 16) == []
    assert spans(hold.due(10)) == [2, 3]
    assert hold._by_trace == {}


def test_an_undone_group_is_skipped_at_its_deadline() -> None:
    """release() takes the rest of a group out (a request that failed as a whole)."""
    hold = HoldBuffer(100)
    kept, undone = group(1), group(2, 3)
    hold.add(kept)
    hold.add(undone)
    hold.trace(bytes([2]) * 16)
    assert hold.release(undone) == [1]
    assert len(hold) == 1
    assert spans(hold.due(10)) == [1]
    assert hold._by_trace == {}


class Reference:
    """The hold as a plain list of spans: (group number, index, trace, deadline, held)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.spans: list[list[Any]] = []

    def live(self) -> list[list[Any]]:
        return [s for s in self.spans if s[4]]

    def take(self, chosen: list[list[Any]]) -> list[tuple[int, int]]:
        for s in chosen:
            s[4] = False
        return [(s[0], s[1]) for s in chosen]

    def add(self, number: int, traces: list[int], deadline: int) -> list[tuple[int, int]]:
        self.spans += [[number, i, t, deadline, True] for i, t in enumerate(traces)]
        excess = len(self.live()) - self.most
        return self.take(self.live()[:excess]) if excess > 0 else []

    def due(self, now: int) -> list[tuple[int, int]]:
        return self.take([s for s in self.live() if s[3] <= now])

    def trace(self, trace: int) -> list[tuple[int, int]]:
        return self.take([s for s in self.live() if s[2] == trace])


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(1, 6), min_size=1, max_size=5)),
        st.tuples(st.just("due"), st.integers(0, 3)),
        st.tuples(st.just("trace"), st.lists(st.integers(1, 6), min_size=1, max_size=3)),
    ),
    max_size=14,
)


@given(_OPS, st.integers(1, 8))
def test_the_hold_releases_what_a_list_of_spans_would(
    ops: list[tuple[str, Any]], most: int
) -> None:
    """Whatever mix of requests held, deadlines, trace identities (the index is built
    when a trace is first asked for) and a full buffer: the same spans leave, in the
    same order, as from a plain list of spans."""
    hold, reference = HoldBuffer(most), Reference(most)
    groups: list[HeldGroup] = []
    clock = 0

    def released(pieces: list[Piece]) -> list[tuple[int, int]]:
        return [(groups.index(p.group), i) for p in pieces for i in p.indexes]

    for op, arg in ops:
        if op == "add":
            clock += 1
            groups.append(group(*arg, deadline=clock + 2))
            expected = reference.add(len(groups) - 1, arg, clock + 2)
            assert released(hold.add(groups[-1])) == expected
        elif op == "due":
            clock += arg
            assert released(hold.due(clock)) == reference.due(clock)
        else:
            ids = [bytes([t]) * 16 for t in arg]
            expected = [span for t in arg for span in reference.trace(t)]
            got = hold.traces(ids) if len(arg) > 1 else hold.trace(ids[0])
            assert released(got) == expected
        assert len(hold) == len(reference.live())
    assert released(hold.drain()) == reference.take(reference.live())
