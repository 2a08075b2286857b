"""What gzip costs per span for an export body, by compressor and level.

One diverse 512-span request (``benchmarks.workload.diverse_batch``), compressed
repeatedly in this process: zlib at level 6 (its default, the level grpcio uses
for ``grpc.Compression.Gzip``), zlib at level 1, and ISA-L at level 1 (what the
service sends). Prints µs per span and the size ratio; asserts nothing.

Usage: python -m benchmarks.compress [--rounds N]
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable, Sequence

from benchmarks.workload import diverse_batch
from processor.export.compress import gzip_fast

SPANS = 512


def _zlib(level: int) -> Callable[[bytes], bytes]:
    def compress(data: bytes) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, 31)
        return packer.compress(data) + packer.flush()

    return compress


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="compressions per row")
    args = parser.parse_args(argv)
    payload = diverse_batch(SPANS)
    print(f"request: {len(payload):,} bytes, {SPANS} spans, {args.rounds} rounds per row\n")
    print("| compressor | µs per span | size ratio |")
    print("|---|---|---|")
    rows = (
        ("zlib level 6 (grpcio's gzip)", _zlib(6)),
        ("zlib level 1", _zlib(1)),
        ("ISA-L level 1 (the service)", gzip_fast),
    )
    for name, compress in rows:
        started = time.perf_counter()
        for _ in range(args.rounds):
            packed = compress(payload)
        per_span = (time.perf_counter() - started) / args.rounds / SPANS * 1e6
        print(f"| {name} | {per_span:.2f} | {len(payload) / len(packed):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
