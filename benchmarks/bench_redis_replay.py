"""
What one replay fetch from Redis costs, read by the replay script (entries
larger than a replay accepts are left out by Redis) and by plain C{XRANGE}
(the fallback where scripts are refused), side by side.

    python benchmarks/bench_redis_replay.py [--url redis://127.0.0.1:6379/15]
        [--entries 1000] [--size 100] [--rounds 50]

The stream key of namespace C{bench-replay} is filled with C{--entries}
entries of C{--size}-byte events, then one fetch of all of them (the
replay thread's existence check and range read, decoded) is timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

from wsgi_sse._backplane import Fetched
from wsgi_sse._redis import RedisBackplane, _connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=50)
    options = parser.parse_args()
    backplane = RedisBackplane(options.url, namespace="bench-replay")
    conn = _connect(options.url, 5.0)
    conn.delete(backplane.key)
    body = b"data: " + b"x" * max(0, options.size - 7) + b"\n"
    pipe = conn.pipeline(transaction=False)
    for _ in range(options.entries):
        pipe.xadd(backplane.key, {b"c": b"default", b"b": body})
    pipe.execute()
    first = conn.xrange(backplane.key, count=1)[0][0].decode("ascii")
    position = backplane.parse_id(first)
    assert position is not None
    for by_script in (True, False):
        times = []
        for _ in range(options.rounds):
            backplane._by_script = by_script
            started = time.perf_counter()
            (fetched,) = backplane._fetch_many([(first, position)])
            times.append(time.perf_counter() - started)
            assert isinstance(fetched, Fetched) and len(fetched.entries) == options.entries - 1
        what = "script" if by_script else "XRANGE"
        print(
            f"{what:>6}: {options.entries:,} entries of {options.size} bytes: "
            f"median {statistics.median(times) * 1000:.2f} ms, "
            f"min {min(times) * 1000:.2f} ms"
        )
    conn.delete(backplane.key)


if __name__ == "__main__":
    main()
