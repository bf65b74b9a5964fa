"""Throughput of JsonlFramer + parse_records against a bare in-memory baseline, in one run.

    python bench/jsonl.py [--repeat 3] [--small-lines 1000000] [--quick]

Three workloads, each fed to the framer in 256 KiB chunks (as they come off a pipe):

(a) small events: ~200-byte stream-json lines, the bulk of a CLI's output;
(b) a mixed file: mostly small events, 2 % tool results of 10-100 KB;
(c) large lines: 1-5 MB tool results.

The baseline parses the same bytes with ``[orjson.loads(l) for l in data.splitlines()]``:
everything in memory, no chunking, no framing — the ceiling for a pure-Python JSONL reader
built on orjson. "(framing only)" is the framer without parsing: the share that is ours.
All sides build the full list of results and run with the garbage collector paused (as
``timeit`` does), best of ``--repeat`` runs. The goals are absolute (>= 500k lines/s small,
>= 400 MB/s mixed, >= 500 MB/s large); the ratio to the baseline shows how much of a slower
host's shortfall is the host.
"""

from __future__ import annotations

import argparse
import gc
import random
import string
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from chia_async.subprocess.framing import JsonlFramer, parse_records

CHUNK = 256 * 1024
GOALS = {"small": ("lines/s", 500_000.0), "mixed": ("MB/s", 400.0), "large": ("MB/s", 500.0)}


def small_event(rng: random.Random, i: int) -> bytes:
    words = " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9)))
        for _ in range(rng.randint(6, 14))
    )
    return orjson.dumps(
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "index": i % 4,
                "delta": {"type": "text_delta", "text": words},
            },
            "session_id": "635ac7f1-2924-4322-b7fa-1f21bb58870c",
        }
    )


def tool_result(rng: random.Random, size: int) -> bytes:
    # source-code-like text: newlines, quotes and tabs, so the parser has escapes to undo
    alphabet = string.ascii_letters + string.digits + '     \n\t"(){}[]=.,:_-é'
    text = "".join(rng.choices(alphabet, k=size))
    return orjson.dumps(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": text},
                ],
            },
            "session_id": "635ac7f1-2924-4322-b7fa-1f21bb58870c",
        }
    )


def build(kind: str, small_lines: int) -> bytes:
    rng = random.Random(7)
    # a pool of distinct lines, repeated: generating millions of unique ones would take
    # longer than the benchmark, and the parser cannot tell
    pool = [small_event(rng, i) for i in range(5000)]
    if kind == "small":
        lines = [pool[i % len(pool)] for i in range(small_lines)]
    elif kind == "mixed":
        big = [tool_result(rng, rng.randint(10_000, 100_000)) for _ in range(200)]
        lines = []
        for i in range(small_lines // 10):
            lines.append(big[i % len(big)] if i % 50 == 0 else pool[i % len(pool)])
    else:
        lines = [tool_result(rng, rng.randint(1_000_000, 5_000_000)) for _ in range(40)]
    return b"\n".join(lines) + b"\n"


def framer_run(chunks: list[bytes]) -> list[Any]:
    framer = JsonlFramer()
    records: list[Any] = []
    for chunk in chunks:
        lines = framer.feed(chunk)
        if lines:
            records.extend(parse_records(lines))
    records.extend(parse_records(framer.flush()))
    return records


def framing_only_run(chunks: list[bytes]) -> list[Any]:
    framer = JsonlFramer()
    lines: list[Any] = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
    lines.extend(framer.flush())
    return lines


def baseline_run(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines()]


def best_of(repeat: int, run: Callable[[], list[Any]]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            records = run()
            elapsed = time.perf_counter() - started
        finally:
            gc.enable()
        count = len(records)
        del records
        best = min(best, elapsed)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-lines", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200k small lines, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.small_lines, args.repeat = 200_000, 1

    print(
        f"{'workload':<8} {'side':<9} {'lines':>9} {'MB':>8} {'s':>7} {'lines/s':>11} {'MB/s':>8}"
    )
    failed = False
    for kind in ("small", "mixed", "large"):
        data = build(kind, args.small_lines)
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        megabytes = len(data) / 1e6
        ours, n_ours = best_of(args.repeat, partial(framer_run, chunks))
        base, n_base = best_of(args.repeat, partial(baseline_run, data))
        framing, n_lines = best_of(args.repeat, partial(framing_only_run, chunks))
        assert n_ours == n_base == n_lines, (n_ours, n_base, n_lines)
        rows = {"framer": ours, "baseline": base, "(framing only)": framing}
        for side, seconds in rows.items():
            print(
                f"{kind:<8} {side:<15} {n_ours:>9} {megabytes:>8.1f} {seconds:>7.3f} "
                f"{n_ours / seconds:>11,.0f} {megabytes / seconds:>8.1f}"
            )
        unit, goal = GOALS[kind]
        value = n_ours / ours if unit == "lines/s" else megabytes / ours
        verdict = "meets" if value >= goal else "MISSES"
        failed |= value < goal
        print(
            f"{kind:<8} framer/baseline speed ratio {base / ours:.2f}; "
            f"{verdict} the goal of {goal:,.0f} {unit} ({value:,.0f})\n"
        )
        del data, chunks
    if failed:
        print("some goals missed on this host; compare the ratios (the baseline is the ceiling)")


if __name__ == "__main__":
    main()
