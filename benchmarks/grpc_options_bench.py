"""Server CPU per request under different gRPC server settings, measured side by side.

    python benchmarks/grpc_options_bench.py [--clients 64] [--duration 5] [--rounds 3]

One `python -m server` per variant (default: the plain server, channelz off, uvloop, a minimal
filter stack, optimisation target "throughput"), all batched the same way. Each round drives every
variant in turn with N closed-loop `Predict` callers (pixels) on one channel, so load from other
processes drifts over all of them alike; it prints requests/s, p99 and server CPU per request for
the whole process tree and for the gRPC process alone, then the median over rounds. Nothing asserts.
Note: `grpc.minimal_stack=1` also removes the server's message-size filter (a 21 MB request then
reaches the preprocessing instead of RESOURCE_EXHAUSTED), so it is measured here, not used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import grpc
from digits.v1 import digits_pb2, digits_pb2_grpc

from testkit.proctree import cpu_seconds, tree_cpu_seconds
from testkit.server_process import ServerProcess
from testkit.stats import percentile
from training.data import load_split

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "channelz off": ["--grpc-arg", "grpc.enable_channelz=0"],
    "uvloop": ["--event-loop", "uvloop"],
    "minimal stack": ["--grpc-arg", "grpc.minimal_stack=1"],
    "target throughput": ["--grpc-arg", "grpc.optimization_target=throughput"],
    "uvloop + minimal": ["--event-loop", "uvloop", "--grpc-arg", "grpc.minimal_stack=1"],
}


async def drive(server: ServerProcess, requests: list, clients: int, duration: float) -> dict:
    pid = server.process.pid
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = digits_pb2_grpc.DigitClassifierStub(channel)
        warm_until = time.perf_counter() + 1.0
        stop_at = warm_until + duration
        marks: list[tuple[float, float]] = []

        async def worker(k: int) -> None:
            i = k
            while (t0 := time.perf_counter()) < stop_at:
                await stub.Predict(requests[i % len(requests)], timeout=30)
                if t0 >= warm_until:
                    latencies.append(time.perf_counter() - t0)
                i += clients

        async def meter() -> None:
            await asyncio.sleep(warm_until - time.perf_counter())
            marks.append((tree_cpu_seconds(pid), cpu_seconds(pid)))
            await asyncio.sleep(stop_at - time.perf_counter())
            marks.append((tree_cpu_seconds(pid), cpu_seconds(pid)))

        await asyncio.gather(meter(), *(worker(k) for k in range(clients)))
    n = len(latencies)
    (tree0, own0), (tree1, own1) = marks
    ms = sorted(x * 1000 for x in latencies)
    return {
        "rps": n / duration,
        "p99_ms": percentile(ms, 99),
        "cpu_ms": (tree1 - tree0) * 1000 / n,
        "grpc_cpu_ms": (own1 - own0) * 1000 / n,
    }


async def main_async(args: argparse.Namespace) -> None:
    split = load_split("test", download=False)
    requests = [digits_pb2.PredictRequest(pixels=img.tobytes()) for img in split.images[:2000].numpy()]
    common = ["--workers", "1", "--log-level", "WARNING", "--max-queue", "4096"]
    chosen = {name: VARIANTS[name] for name in args.variants}
    results: dict[str, list[dict]] = {name: [] for name in chosen}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(ServerProcess(None, common + extra)) for name, extra in chosen.items()}
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for name, server in servers.items():
                results[name].append(await drive(server, requests, args.clients, args.duration))
    print(f"\n{args.clients} clients of Predict (pixels), {args.duration:g} s per run; median of {args.rounds} rounds")
    print(f"{'variant':<20} {'req/s':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'gRPC ms/req':>12}   per round (gRPC ms)")
    for name, runs in results.items():
        med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
        per_round = ", ".join(f"{r['grpc_cpu_ms']:.3f}" for r in runs)
        print(f"{name:<20} {med['rps']:8.0f} {med['p99_ms']:8.1f} {med['cpu_ms']:11.3f} {med['grpc_cpu_ms']:12.3f}"
              f"   {per_round}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (after 1 s warm-up)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    asyncio.run(main_async(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
