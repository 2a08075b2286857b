"""The durable spool: round trip, replay order, bounds, and corrupt files quarantined."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import wait_until
from structlog.testing import capture_logs

from processor.export.spool import MAGIC, Spool


async def test_append_then_reopen_replays_in_order(tmp_path: Path) -> None:
    """What was appended and not removed comes back, oldest first, after a restart."""
    spool = Spool(tmp_path, 1 << 20)
    assert spool.open() == []
    tags = [await spool.append(f"request {i}".encode()) for i in range(4)]
    spool.remove(tags[1])
    again = Spool(tmp_path, 1 << 20)
    entries = again.open()
    assert [e.data for e in entries] == [b"request 0", b"request 2", b"request 3"]
    assert await again.append(b"next") > tags[-1]


async def test_bound_by_bytes(tmp_path: Path) -> None:
    """has_room accounts for every byte held, and removal frees it."""
    spool = Spool(tmp_path, 100)
    spool.open()
    assert spool.has_room(50)
    tag = await spool.append(b"x" * 60)
    assert not spool.has_room(50)
    spool.remove(tag)
    assert spool.has_room(50) and spool.bytes_used == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "truncated header"),
        (b"NOTSPOOL" + b"\x00\x00\x00\x01" + b"\x00" * 4 + b"x", "bad magic"),
        (MAGIC + b"\x00\x00\x00\x10" + b"\x00" * 4 + b"short", "truncated"),
        (MAGIC + b"\x00\x00\x00\x01" + b"\xde\xad\xbe\xef" + b"x", "checksum mismatch"),
    ],
)
def test_corrupt_files_are_quarantined(tmp_path: Path, content: bytes, problem: str) -> None:
    """A damaged file is moved aside and reported; start-up goes on with the good ones."""
    (tmp_path / f"{7:020d}.req").write_bytes(content)
    with capture_logs() as logs:
        spool = Spool(tmp_path, 1 << 20)
        assert spool.open() == []
    assert spool.quarantined == 1
    assert len(list((tmp_path / "quarantine").glob(f"{7:020d}-*.req"))) == 1
    (event,) = [e for e in logs if e["event"] == "spool_file_quarantined"]
    assert event["problem"].startswith(problem)


def test_interrupted_write_leaves_no_entry(tmp_path: Path) -> None:
    """A temporary file from a write cut short is discarded, not replayed."""
    (tmp_path / f"{3:020d}.tmp").write_bytes(MAGIC)
    assert Spool(tmp_path, 1 << 20).open() == []
    assert not list(tmp_path.glob("*.tmp"))


async def test_cancelled_write_leaves_no_file(tmp_path: Path) -> None:
    """A write whose caller gave up is not replayed later (the sender will retry)."""
    import asyncio

    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    task = asyncio.create_task(spool.append(b"x" * 1000))
    await asyncio.sleep(0)  # let the write start in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The write finishes in its thread, then the file goes: wait for that state.
    await wait_until(lambda: not any(tmp_path.glob("*.req")), timeout_s=10)
    assert spool.bytes_used == 0
