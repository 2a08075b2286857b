"""The progress line ``report`` writes on stderr while it queries Jaeger."""

from __future__ import annotations

from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``fetched 12/24 windows, 3,412 spans``: redrawn in place on a terminal,
    otherwise one line per tenth of the windows (and one at the end)."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = enabled and _isatty(stream)
        self._tenths = -1  # the last tenth printed, off a terminal
        self._drawn = False  # a terminal line is waiting for its newline

    def update(self, done: int, total: int, spans: int) -> None:
        """Report that ``done`` of ``total`` windows are fetched, holding ``spans`` spans."""
        if not self._enabled or total <= 0:
            return
        line = f"fetched {done:,}/{total:,} windows, {spans:,} spans"
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            tenths = 10 * done // total  # reaches 10 only with the last window
            if tenths <= self._tenths:
                return
            self._tenths = tenths
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """End the terminal line, so that what follows starts on a line of its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
