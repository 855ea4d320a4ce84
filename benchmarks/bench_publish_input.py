"""
What the publish endpoint's reading of a JSON body costs (the nesting
check, then the parse), for bodies up to its 64 KiB limit, ordinary and
built to be slow: a string never closed and full of escaped quotes, a
closed one, and brackets nested as deep as the body allows.

    python benchmarks/bench_publish_input.py [--repeats 5]

The reading runs in the reactor thread, so its time is time every stream
and page waits.  Work in proportion to the body's size shows as the same
microseconds per KiB at every size.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from wsgi_sse._publish import _Answer, _json_fields

SIZES = (8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024)

BODIES: dict[str, Callable[[int], bytes]] = {
    "unclosed string of escaped quotes": lambda n: b'{"data":"' + b'\\"' * ((n - 9) // 2),
    "closed string of escaped quotes": lambda n: b'{"data":"' + b'\\"' * ((n - 11) // 2) + b'"}',
    "plain text": lambda n: b'{"data":"' + b"a" * (n - 11) + b'"}',
    "brackets only": lambda n: b"[" * n,
}


def read_seconds(body: bytes, repeats: int) -> float:
    """The best of C{repeats} readings of C{body}, in seconds (a refusal included)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            _json_fields(body)
        except _Answer:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="readings per body (best kept)")
    cfg = parser.parse_args(argv)
    if cfg.repeats < 1:
        parser.error("--repeats must be at least 1")
    print("| body | " + " | ".join(f"{n // 1024} KiB" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for name, make in BODIES.items():
        cells = []
        for size in SIZES:
            seconds = read_seconds(make(size), cfg.repeats)
            cells.append(f"{seconds * 1e3:,.2f} ms ({seconds * 1e6 / (size / 1024):,.0f} µs/KiB)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
