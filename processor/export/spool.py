"""Durable spool: accepted requests on disk until every span in them was delivered.

One file per request, ``<tag>.req``: an 8-byte magic, the payload length and its
CRC-32 (big-endian u32 each), then the payload. A file is written under a
temporary name, fsync'ed and renamed, and the directory fsync'ed, before the
sender is answered, so a ``kill -9`` at any moment leaves either a whole file or
none. Files that fail the checks at start-up are moved to ``quarantine/`` and
reported; they never stop the service from starting.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

MAGIC = b"UESPOOL1"
_HEADER = struct.Struct(">8sII")
_SUFFIX = ".req"

log = structlog.get_logger("processor.export.spool")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A request found in the spool at start-up."""

    tag: int
    data: bytes


class Spool:
    """The spool directory; call :meth:`open` once, then append and remove."""

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        self._dir = Path(directory)
        self._quarantine = self._dir / "quarantine"
        self._max = max_bytes
        self._sizes: dict[int, int] = {}
        self._used = 0
        self._next = 1
        self.quarantined = 0

    @property
    def bytes_used(self) -> int:
        """Bytes held by the files not yet removed."""
        return self._used

    def __len__(self) -> int:
        return len(self._sizes)

    def has_room(self, size: int) -> bool:
        """Whether a payload of ``size`` bytes fits under the bound."""
        return self.bytes_used + size + _HEADER.size <= self._max

    def open(self) -> list[SpoolEntry]:
        """Create the directory if needed and return the requests left by earlier runs."""
        self._dir.mkdir(parents=True, exist_ok=True)
        for stale in self._dir.glob("*.tmp"):  # a write interrupted before its rename
            stale.unlink(missing_ok=True)
        entries = list(self._recover())
        self._next = max((e.tag for e in entries), default=0) + 1
        return entries

    async def append(self, data: bytes) -> int:
        """Write ``data`` durably; returns its tag. Runs the blocking I/O in a thread."""
        tag = self._next
        self._next += 1
        self._track(tag, len(data) + _HEADER.size)
        write = asyncio.ensure_future(asyncio.to_thread(self._write, tag, data))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # The caller gave up (its deadline, shutdown): the sender was not
            # answered and will retry, so the file must not survive to be replayed.
            write.add_done_callback(lambda _: self._path(tag).unlink(missing_ok=True))
            self._untrack(tag)
            raise
        except BaseException:
            self._untrack(tag)
            raise
        return tag

    def remove(self, tag: int) -> None:
        """Forget a request whose spans were all delivered (or permanently refused)."""
        if self._untrack(tag):
            self._path(tag).unlink(missing_ok=True)

    def _track(self, tag: int, size: int) -> None:
        self._sizes[tag] = size
        self._used += size

    def _untrack(self, tag: int) -> bool:
        size = self._sizes.pop(tag, None)
        if size is None:
            return False
        self._used -= size
        return True

    def _write(self, tag: int, data: bytes) -> None:
        final = self._path(tag)
        tmp = final.with_suffix(".tmp")
        header = _HEADER.pack(MAGIC, len(data), zlib.crc32(data))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, header)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self._dir)

    def _recover(self) -> Iterator[SpoolEntry]:
        for path in sorted(self._dir.glob(f"*{_SUFFIX}"), key=_tag_of):
            tag = _tag_of(path)
            problem, data = _check(path)
            if problem is not None:
                self._quarantine_file(path, problem)
                continue
            self._track(tag, len(data) + _HEADER.size)
            yield SpoolEntry(tag, data)

    def _quarantine_file(self, path: Path, problem: str) -> None:
        self._quarantine.mkdir(exist_ok=True)
        # Tags restart after a clean run, so names repeat: never overwrite.
        target = self._quarantine / f"{path.stem}-{time.time_ns()}{path.suffix}"
        os.replace(path, target)
        self.quarantined += 1
        log.error(
            "spool_file_quarantined",
            file=str(path),
            moved_to=str(target),
            problem=problem,
            hint="the request in it cannot be replayed; inspect or delete the file",
        )

    def _path(self, tag: int) -> Path:
        return self._dir / f"{tag:020d}{_SUFFIX}"


def _tag_of(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return -1


def _check(path: Path) -> tuple[str | None, bytes]:
    """(problem, payload): problem is None when the file is whole and intact."""
    if _tag_of(path) < 0:
        return "not a spool file name", b""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}", b""
    if len(raw) < _HEADER.size:
        return "truncated header", b""
    magic, length, crc = _HEADER.unpack_from(raw)
    data = raw[_HEADER.size :]
    if magic != MAGIC:
        return "bad magic", b""
    if len(data) != length:
        return f"truncated: {len(data)} of {length} bytes", b""
    if zlib.crc32(data) != crc:
        return "checksum mismatch", b""
    return None, data


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
