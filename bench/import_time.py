"""Wall time of `import chia_async` against a bare interpreter start, measured in one run.

    python bench/import_time.py [--runs 30]

Prints the median of each and the difference (goal: <= 100 ms), plus what `import
chia_async` pulled in, so a regression names its culprit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

GOAL_MS = 100.0


def median_ms(code: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    median_ms("import chia_async", 3)  # warm the filesystem cache and the .pyc files
    bare = median_ms("pass", args.runs)
    package = median_ms("import chia_async", args.runs)
    full = median_ms("import chia_async.base, chia_async.events, chia_async.errors", args.runs)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; before=set(sys.modules); import chia_async; "
            "print(len(set(sys.modules)-before))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    delta = package - bare
    print(f"python -c pass                   median {bare:7.1f} ms  ({args.runs} runs)")
    print(f"python -c 'import chia_async'    median {package:7.1f} ms")
    print(f"  + core modules (base, events)  median {full:7.1f} ms")
    print(
        f"import chia_async costs {delta:.1f} ms over a bare start "
        f"(goal <= {GOAL_MS:.0f} ms): {'OK' if delta <= GOAL_MS else 'OVER GOAL'}"
    )
    print(f"ratio {package / bare:.2f}x; modules added by the import: {loaded}")


if __name__ == "__main__":
    main()
