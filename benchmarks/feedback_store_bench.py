"""What durability costs the feedback store: acknowledged corrections per second, synchronous=FULL
(what the server uses: fsync before every acknowledgement) next to NORMAL (survives a killed
process, not a power cut), measured side by side on the same disk; then Feedback through a real
server with concurrent clients.

    .venv/bin/python benchmarks/feedback_store_bench.py [--records 400] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from client import DigitsClient
from model.checkpoint import DEFAULT_CHECKPOINT
from server.feedback_store import FeedbackStore
from testkit.server_process import ServerProcess
from testkit.stats import percentile


def store_rate(path: Path, records: int, synchronous: str) -> float:
    """Records/s through FeedbackStore.add, each its own committed transaction."""
    images = [np.random.default_rng(i).integers(0, 256, 784, dtype=np.uint8).tobytes() for i in range(records)]
    with FeedbackStore(path) as store:
        store._connection().execute(f"PRAGMA synchronous={synchronous}")
        t0 = time.perf_counter()
        for i, pixels in enumerate(images):
            store.add(pixels, i % 10, (i + 1) % 10, model_version="bench", source="bench", user="u-bench")
        return records / (time.perf_counter() - t0)


async def rpc_run(target: str, records: int, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(range(records))
    async with DigitsClient(target, timeout=30) as client:

        async def worker() -> None:
            while queue:
                i = queue.pop()
                pixels = np.random.default_rng(10_000 + i).integers(0, 256, 784, dtype=np.uint8).tobytes()
                t = time.perf_counter()
                await client.feedback(pixels, i % 10, (i + 3) % 10, model_version="bench", user="u-bench")
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return records / (time.perf_counter() - t0), latencies


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="digits-feedback-bench-") as tmp:
        root = Path(tmp)
        full = store_rate(root / "full.sqlite3", args.records, "FULL")
        normal = store_rate(root / "normal.sqlite3", args.records, "NORMAL")
        print(
            f"store, one writer, {args.records} records, WAL: synchronous=FULL {full:,.0f}/s, "
            f"NORMAL {normal:,.0f}/s (FULL costs {normal / full:.1f}x; the server uses FULL)"
        )
        db = root / "server.sqlite3"
        with ServerProcess(model=DEFAULT_CHECKPOINT, args=["--workers", "1", "--feedback-db", str(db)]) as server:
            for clients in (1, args.clients):
                rate, lat = asyncio.run(rpc_run(server.target, args.records, clients))
                ms = sorted(x * 1000 for x in lat)
                print(
                    f"Feedback RPC, {clients:2d} client(s): {rate:,.0f} acknowledged records/s, "
                    f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms"
                )
    print("(shared 2-core machine: compare the figures of one run with each other)")


if __name__ == "__main__":
    main()
