"""Load test of `trainlab serve` against calling the same model in-process.

    python scripts/bench_serve.py                      # trains a digits MLP run first
    python scripts/bench_serve.py --run outputs/runs/<run> --batch-sizes 1,32 --seconds 10
    python scripts/bench.py --serve                    # the same, from the main bench

For each request size B (items per request):

    in-process   `trainlab.Predictor.predict(rows)` in a loop, B rows a call: what a user's
                 own Python loop around the model gets (encoding, model, class names)
    server       `trainlab serve` in its own process, `--clients` (16) concurrent clients
                 on localhost, each sending requests of B items one after another over a
                 kept-alive HTTP/1.1 connection for `--seconds`

The clients are a minimal asyncio HTTP/1.1 client in this process (pre-encoded requests,
so the load generator costs the machine as little as it can). Reported: requests/s of
each and their ratio (the issue's bar: server >= 0.8x in-process), the server's p50 and
p99 latency, and the mean items per model call that dynamic batching reached. The
in-process loop runs before and after the server; its mean is the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def train_run(folder: Path) -> Path:
    """A digits MLP run (the default experiment, 5 epochs)."""
    run_dir = folder / "digits"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainlab",
            "trainer.max_epochs=5",
            f"hydra.run.dir={run_dir}",
            f"paths.root_dir={folder}",
        ],
        check=True,
        env=environment(),
        stdout=subprocess.DEVNULL,
    )
    return run_dir


def test_rows(count: int) -> list[list[float]]:
    from sklearn.datasets import load_digits

    return load_digits().images[:count].tolist()


def in_process(run_dir: Path, rows: list[Any], batch: int, seconds: float) -> float:
    """Calls per second of `Predictor.predict` on `batch` rows at a time."""
    import numpy as np

    from trainlab.app.predict import Predictor

    predictor = Predictor.load(run_dir)
    samples = np.asarray(rows)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        first = (calls * batch) % (len(samples) - batch)
        predictor.predict(samples[first : first + batch])
        calls += 1
    return calls / elapsed


class Server:
    def __init__(self, run_dir: Path, log: Path, max_batch: int, max_wait_ms: float) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainlab",
                "serve",
                f"run={run_dir}",
                "port=0",
                f"max_batch={max_batch}",
                f"max_wait_ms={max_wait_ms}",
            ],
            env=environment(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while not (found := re.search(r"at http://(127\.0\.0\.1):(\d+) ", log.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {log.read_text()}")
            time.sleep(0.1)
        self.host, self.port = found.group(1), int(found.group(2))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)


def request_bytes(host: str, port: int, method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    return status, await reader.readexactly(length)


async def get_json(host: str, port: int, path: str) -> Any:
    reader, writer = await asyncio.open_connection(host, port)
    _, body = await exchange(reader, writer, request_bytes(host, port, "GET", path))
    writer.close()
    return json.loads(body)


async def load(
    host: str, port: int, requests: list[bytes], clients: int, seconds: float
) -> tuple[list[float], list[bytes]]:
    """Each client sends requests one after another until `seconds` have passed; returns
    every request's latency and the first reply of each request body (to check)."""
    latencies: list[float] = []
    replies: dict[int, bytes] = {}
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = k
        while time.perf_counter() < stop:
            body = requests[i % len(requests)]
            start = time.perf_counter()
            status, reply = await exchange(reader, writer, body)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                raise SystemExit(f"status {status}: {reply[:200]!r}")
            replies.setdefault(i % len(requests), reply)
            i += clients
        writer.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, [replies[i] for i in sorted(replies)]


def check_replies(run_dir: Path, rows: list[Any], batch: int, replies: list[bytes]) -> None:
    """The server's classes must be `Predictor.predict`'s for the same rows."""
    import numpy as np

    from trainlab.app.predict import Predictor

    predictor = Predictor.load(run_dir)
    for i, reply in enumerate(replies[:5]):
        chunk = np.asarray(rows[i * batch : i * batch + batch])
        expected = predictor.predict(chunk)["prediction"].tolist()
        answers = json.loads(reply)
        got = (
            [a["prediction"] for a in answers["predictions"]]
            if batch > 1
            else [answers["prediction"]]
        )
        assert got == expected, (got, expected)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(run_dir: Path, batch: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    count = max(64, batch * 50)
    rows = test_rows(min(count, 1700))
    requests = []
    for first in range(0, len(rows) - batch + 1, batch):
        items = rows[first : first + batch]
        body = json.dumps({"inputs": items} if batch > 1 else {"input": items[0]}).encode()
        requests.append(body)
    before = in_process(run_dir, rows, batch, args.seconds)
    server = Server(run_dir, folder / f"serve-{batch}.log", args.max_batch, args.max_wait_ms)
    try:
        wire = [request_bytes(server.host, server.port, "POST", "/predict", b) for b in requests]
        asyncio.run(load(server.host, server.port, wire, args.clients, 1.0))  # warm-up
        start_stats = asyncio.run(get_json(server.host, server.port, "/metadata"))["stats"]
        latencies, replies = asyncio.run(
            load(server.host, server.port, wire, args.clients, args.seconds)
        )
        stats = asyncio.run(get_json(server.host, server.port, "/metadata"))["stats"]
    finally:
        server.stop()
    after = in_process(run_dir, rows, batch, args.seconds)
    check_replies(run_dir, rows, batch, replies)
    baseline = (before + after) / 2
    served = len(latencies) / args.seconds
    calls = stats["model_calls"] - start_stats["model_calls"]
    return {
        "items_per_request": batch,
        "in_process_calls_per_s": round(baseline, 1),
        "in_process_before_after": [round(before, 1), round(after, 1)],
        "server_requests_per_s": round(served, 1),
        "ratio": round(served / baseline, 3),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "items_per_model_call": round((stats["items"] - start_stats["items"]) / max(calls, 1), 1),
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nserver throughput: {args.clients} clients on localhost, {args.seconds:g} s each, "
        f"max_batch={args.max_batch}, max_wait_ms={args.max_wait_ms:g}"
    )
    print(
        f"{'items/req':>9} {'in-process/s':>13} {'server req/s':>13} {'ratio':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'items/call':>10}"
    )
    for r in results:
        print(
            f"{r['items_per_request']:>9} {r['in_process_calls_per_s']:>13} "
            f"{r['server_requests_per_s']:>13} {r['ratio']:>6} {r['p50_ms']:>7} "
            f"{r['p99_ms']:>7} {r['items_per_model_call']:>10}"
        )


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parse.add_argument("--run", type=Path, help="a run folder (default: train a digits MLP)")
    parse.add_argument("--batch-sizes", default="1,32", help="items per request")
    parse.add_argument("--clients", type=int, default=16)
    parse.add_argument("--seconds", type=float, default=10.0)
    parse.add_argument("--max-batch", type=int, default=256)
    parse.add_argument("--max-wait-ms", type=float, default=2.0)
    parse.add_argument("--json", type=Path, help="write the figures to this file")
    return parse


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_dir = args.run or train_run(folder)
        results = [bench(run_dir, b, args, folder) for b in map(int, args.batch_sizes.split(","))]
    report(results, args)
    return {"serve": results}


def run_with_defaults(_args: argparse.Namespace) -> dict[str, Any]:
    """`scripts/bench.py --serve`: the load test with the defaults above."""
    return run(parser().parse_args([]))


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    figures = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
