"""Benchmark: server CPU per simple non-streaming chat completion of the scripted model server.

The server runs in this process (in its own thread, as in tests); the client runs in a
separate process so its CPU is not counted. Server CPU is the server thread's own CPU time
(``time.thread_time()`` read inside that thread before and after the run); the process CPU
(``resource.getrusage``) is shown too, as this process does nothing else meanwhile.

    python bench/scripted_server.py                  # 3 rounds of 2000 requests, 1 connection
    python bench/scripted_server.py -n 5000 -c 4     # 4 concurrent keep-alive connections
    python bench/scripted_server.py --client openai  # the real openai SDK as the client

Goal: at most 0.3 ms of server CPU per request. Shared machines are noisy: the median of
the rounds is the number to read.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import time

from chia_async.testing import ScriptedModelServer, Turn

GOAL_MS = 0.3

# Runs in the client process: N requests over C keep-alive connections, one thread each.
_HTTP_CLIENT = r"""
import http.client, sys, threading, urllib.parse
url, total, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
parts = urllib.parse.urlsplit(url)
body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}]}'
headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
def run(count):
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    for _ in range(count):
        conn.request("POST", "/v1/chat/completions", body, headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"unexpected status {response.status}: {data[:200]!r}")
    conn.close()
shares = [total // conns + (i < total % conns) for i in range(conns)]
threads = [threading.Thread(target=run, args=(share,)) for share in shares]
for t in threads: t.start()
for t in threads: t.join()
"""

_OPENAI_CLIENT = r"""
import sys, openai
url, total = sys.argv[1], int(sys.argv[2])
client = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)
messages = [{"role": "user", "content": "ping"}]
for _ in range(total):
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
client.close()
"""


def _server_thread_cpu(srv: ScriptedModelServer) -> float:
    async def read() -> float:
        return time.thread_time()

    loop = srv._loop  # the benchmark peeks at the server's loop to read that thread's clock
    assert loop is not None
    return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=10)


def _run_client(kind: str, url: str, total: int, conns: int) -> None:
    if kind == "openai":
        argv = [sys.executable, "-c", _OPENAI_CLIENT, url, str(total)]
    else:
        argv = [sys.executable, "-c", _HTTP_CLIENT, url, str(total), str(conns)]
    subprocess.run(argv, check=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--client", choices=("http", "openai"), default="http")
    args = parser.parse_args()

    print(f"client: {args.client}, {args.connections} connection(s); {args.warmup} warm-up")
    per_request: list[float] = []
    with ScriptedModelServer(max_recorded=1000) as srv:
        srv.script("default", [Turn(text="pong")], repeat=True)
        if args.warmup:
            _run_client(args.client, srv.url, args.warmup, args.connections)
        for round_no in range(1, args.rounds + 1):
            cpu0 = _server_thread_cpu(srv)
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            wall0 = time.perf_counter()
            _run_client(args.client, srv.url, args.requests, args.connections)
            wall = time.perf_counter() - wall0
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = _server_thread_cpu(srv) - cpu0
            process_cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
            ms = cpu / args.requests * 1000
            per_request.append(ms)
            print(
                f"round {round_no}: {args.requests} requests in {wall:.3f} s "
                f"({args.requests / wall:,.0f}/s); server thread CPU {ms:.3f} ms/request "
                f"(process {process_cpu / args.requests * 1000:.3f})"
            )
    median = statistics.median(per_request)
    verdict = "OK" if median <= GOAL_MS else "OVER"
    print(
        f"server CPU per request: median {median:.3f} ms, best {min(per_request):.3f} ms "
        f"(goal <= {GOAL_MS} ms: {verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
