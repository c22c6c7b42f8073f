"""Replicas and reloads under load, all on loopback; prints figures next to the issue's targets, asserts nothing.

    python benchmarks/replicas_bench.py [--duration 30] [--users 32] [--reload-users 64] [--phase 8]

1. Failover: three server replicas and one DigitsClient whose target lists all three
   (`ipv4:127.0.0.1:P1,...`, gRPC round_robin + retries). `--users` closed-loop callers run for
   `--duration` s; at 1/3 of it one replica is SIGKILLed, at 2/3 another is SIGTERMed (it drains).
   Printed: failed calls (target 0), and how evenly each phase's calls spread over the replicas live
   in it, from each server's own /metrics (target: every replica within 20% of the mean).
2. Reload: one server, `--reload-users` callers; `--reloads` times, after `--phase` s the --model
   file is replaced by another checkpoint and the server gets SIGHUP. Printed per reload: failed
   calls (target 0) and p99 latency from the SIGHUP until 1 s after the new model's first answer,
   against p99 over the `--phase` s before (target <= 2x), and p99 within 1 s of the switch; then
   the median and worst ratio (one reload on a shared machine says little).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from client import DigitsClient, DigitsError
from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from testkit.metrics import calls_served
from testkit.server_process import ServerProcess
from testkit.stats import percentile
from training.data import default_data_dir, load_split

SERVER_ARGS = ["--workers", "1", "--torch-threads", "1"]


@dataclass
class Record:
    """One answered or failed call: when it ended, how long it took, which model answered."""

    end: float
    seconds: float
    version: str = ""
    error: str = ""


@dataclass
class Load:
    client: DigitsClient
    images: list[bytes]
    users: int
    records: list[Record] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _user(self, k: int) -> None:
        i = k * 7
        while not self._stop.is_set():
            image = self.images[i % len(self.images)]
            start = time.perf_counter()
            try:
                p = await self.client.predict_pixels(image)
                self.records.append(Record(time.perf_counter(), time.perf_counter() - start, p.model_version))
            except DigitsError as exc:
                self.records.append(Record(time.perf_counter(), time.perf_counter() - start, error=repr(exc)))
            i += 1

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._user(k)) for k in range(self.users)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def failures(self) -> list[Record]:
        return [r for r in self.records if r.error]


def spread(counts: list[int]) -> str:
    mean = sum(counts) / len(counts)
    worst = max(abs(c - mean) / mean for c in counts) if mean else float("nan")
    verdict = "within" if worst <= 0.20 else "NOT within"
    return f"calls {counts}: largest deviation from the mean {worst:.1%} ({verdict} 20%)"


async def failover(images: list[bytes], duration: float, users: int) -> None:
    print(f"\n== failover: 3 replicas, {users} callers, {duration:g} s; SIGKILL at 1/3, SIGTERM at 2/3")
    servers = [ServerProcess(DEFAULT_CHECKPOINT, SERVER_ARGS) for _ in range(3)]
    try:
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_serving()
        target = "ipv4:" + ",".join(s.target for s in servers)
        async with DigitsClient(target, timeout=10) as client:
            for _ in range(30):  # connect to all three before measuring
                await client.predict_pixels(images[0])
            load = Load(client, images, users)
            phases: list[tuple[str, list[int], list[int]]] = []  # (name, live replicas, calls at start)
            counts = [calls_served(s.metrics_url) for s in servers]
            load.start()
            t0 = time.perf_counter()
            await asyncio.sleep(duration / 3)
            now = [calls_served(s.metrics_url) for s in servers]
            phases.append(("3 live", [0, 1, 2], [b - a for a, b in zip(counts, now, strict=True)]))
            servers[0].process.kill()
            await asyncio.to_thread(servers[0].process.wait)
            killed_at = time.perf_counter() - t0
            counts = [0, *(calls_served(s.metrics_url) for s in servers[1:])]
            await asyncio.sleep(duration * 2 / 3 - killed_at)
            now = [0, *(calls_served(s.metrics_url) for s in servers[1:])]
            phases.append(("after SIGKILL, 2 live", [1, 2], [b - a for a, b in zip(counts, now, strict=True)]))
            servers[1].signal(signal.SIGTERM)
            await asyncio.sleep(duration - (time.perf_counter() - t0))
            await load.stop()
            elapsed = time.perf_counter() - t0
        code = await asyncio.to_thread(servers[1].process.wait, 60)
        failed = load.failures()
        print(f"calls: {len(load.records)} in {elapsed:.1f} s ({len(load.records) / elapsed:.0f}/s)")
        print(f"failed calls: {len(failed)} (target 0)" + (f"; first: {failed[0].error}" if failed else ""))
        print(f"replica 1 after SIGTERM: exit code {code}")
        for name, live, calls in phases:
            print(f"spread, {name}: " + spread([calls[i] for i in live]))
        latencies = [r.seconds * 1000 for r in load.records if not r.error]
        print(
            f"latency p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
            f"max {max(latencies):.1f} ms"
        )
    finally:
        for s in servers:
            s.close()


def _reload_figures(records: list[Record], before_from: float, hup_at: float, switched_at: float) -> dict[str, float]:
    """p50/p99 of one reload's windows: the phase before the SIGHUP, the load, the switch."""
    ok = [r for r in records if not r.error]
    before = [r.seconds * 1000 for r in ok if before_from <= r.end < hup_at]
    during = [r.seconds * 1000 for r in ok if hup_at <= r.end <= switched_at + 1.0]
    around = [r.seconds * 1000 for r in ok if abs(r.end - switched_at) <= 1.0]
    loading = [r.seconds * 1000 for r in ok if hup_at <= r.end < switched_at]
    return {
        "load_s": switched_at - hup_at,
        "p99_before": percentile(before, 99),
        "p99_during": percentile(during, 99),
        "p99_around": percentile(around, 99),
        "p50_before": percentile(before, 50),
        "p50_loading": percentile(loading, 50) if loading else float("nan"),
        "n_before": len(before),
        "n_during": len(during),
    }


async def reload_under_load(images: list[bytes], phase: float, users: int, warmup: float, reloads: int) -> None:
    print(f"\n== reload: 1 server, {users} callers; {reloads} reloads (new --model file + SIGHUP), {phase:g} s apart")
    folder = Path(tempfile.mkdtemp(prefix="digits-reload-bench-"))
    try:
        model = folder / "model.safetensors"
        shutil.copy(DEFAULT_CHECKPOINT, model)
        loaded = load_checkpoint(DEFAULT_CHECKPOINT)
        with ServerProcess(model, [*SERVER_ARGS, "--reload-poll", "0"]) as server:
            async with DigitsClient(server.target, timeout=10) as client:
                for _ in range(30):
                    await client.predict_pixels(images[0])
                load = Load(client, images, users)
                load.start()
                # Not measured: the graph specializes on batch sizes it has not seen yet for a few seconds.
                await asyncio.sleep(warmup)
                runs = []
                for k in range(1, reloads + 1):
                    new = folder / f"new-{k}.safetensors"
                    new_version = save_checkpoint(
                        new,
                        loaded.model,
                        loaded.temperature,
                        version=f"bench-reloaded-{k}",
                        gate=loaded.gate,
                        several=loaded.several,
                    )
                    before_from = time.perf_counter()
                    await asyncio.sleep(phase)
                    os.replace(new, model)  # atomic, as `mv` does
                    hup_at = time.perf_counter()
                    server.signal(signal.SIGHUP)
                    while not any(r.version == new_version for r in load.records[-users:]):
                        await asyncio.sleep(0.05)
                        if time.perf_counter() - hup_at > 120:
                            raise TimeoutError("the new model never answered")
                    switched_at = min(r.end for r in load.records if r.version == new_version)
                    await asyncio.sleep(max(0.0, switched_at + 1.0 - time.perf_counter()))
                    runs.append(_reload_figures(load.records, before_from, hup_at, switched_at))
                await load.stop()
        failed = load.failures()
        print(
            f"failed calls: {len(failed)} of {len(load.records)} (target 0)"
            + (f"; first: {failed[0].error}" if failed else "")
        )
        print("reload  loaded in  p99 before  p99 SIGHUP..switch+1s  ratio  p99 +-1 s of switch  p50 before/loading")
        for k, f in enumerate(runs, 1):
            print(
                f"{k:>6}  {f['load_s']:7.2f} s  {f['p99_before']:7.1f} ms  {f['p99_during']:14.1f} ms"
                f"        {f['p99_during'] / f['p99_before']:5.2f}x  {f['p99_around'] / f['p99_before']:13.2f}x"
                f"        {f['p50_before']:.1f} / {f['p50_loading']:.1f} ms"
            )
        ratios = sorted(f["p99_during"] / f["p99_before"] for f in runs)
        median = ratios[len(ratios) // 2]
        print(
            f"p99 from SIGHUP until 1 s after the switch vs the {phase:g} s before: median {median:.2f}x,"
            f" worst {ratios[-1]:.2f}x (target <= 2x)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="failover load, seconds")
    parser.add_argument("--users", type=int, default=32, help="concurrent callers in the failover run")
    parser.add_argument("--reload-users", type=int, default=64, help="concurrent callers in the reload run")
    parser.add_argument("--phase", type=float, default=8.0, help="seconds of load measured before the reload")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of reload-run load not measured")
    parser.add_argument("--reloads", type=int, default=3, help="reloads in the reload run, one after another")
    parser.add_argument("--only", choices=("failover", "reload"), default=None, help="run one part only")
    args = parser.parse_args()
    test = load_split("test", default_data_dir(), download=False)
    images = [img.tobytes() for img in test.images[:512].numpy()]
    print(f"machine: {os.cpu_count()} CPU cores (shared with other work: figures vary run to run)")
    if args.only in (None, "failover"):
        await failover(images, args.duration, args.users)
    if args.only in (None, "reload"):
        await reload_under_load(images, args.phase, args.reload_users, args.warmup, args.reloads)


if __name__ == "__main__":
    asyncio.run(main())
