"""Benchmark digits-server: throughput, latency and server CPU per answer with batching on vs off,
against two ceilings measured in the same run, PredictBatch and PredictStream, photo throughput and
the 10,000-image exactness check.

    python benchmarks/server_bench.py [--clients 64] [--duration 10] [--device cpu]

Each server is a real `python -m server` subprocess on a free loopback port; the load comes from
N concurrent closed-loop callers on one grpc.aio channel in this process (PredictStream: N streams,
each writing as fast as flow control lets it). Server CPU is read from /proc for the server's whole
process tree (gRPC process, model process, preprocessing workers) over the measured seconds, and
divided by the answers in them; "gRPC ms" is the gRPC process alone. Figures are printed, with the
issue's targets next to them; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shlex
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
import torch
from digits.v1 import digits_pb2, digits_pb2_grpc

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from model.shape import NOT_A_DIGIT_INDEX
from server.model_runner import ModelRunner
from testkit.photos import phone_photo
from testkit.proctree import cpu_seconds, tree_cpu_seconds
from testkit.server_process import ServerProcess
from testkit.stats import percentile
from training.data import load_split
from training.metrics import collect_logits, report


@dataclass
class Run:
    name: str
    requests: int
    errors: int  # failed RPCs other than an answered "no digit in this image"
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float | None = None
    no_digit: int = 0
    cpu_ms: float | None = None  # server CPU (whole process tree) per answered request
    grpc_cpu_ms: float | None = None  # the gRPC process alone

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def batch_stats(metrics_url: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("digits_batch_size_sum ", "digits_batch_size_count ")):
            name, value = line.split(" ")
            values[name] = float(value)
    return values["digits_batch_size_sum"], values["digits_batch_size_count"]


class CpuMeter:
    """Server CPU over the measured part of a run: `start()` when measuring starts, `stop(answers)`."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._start: tuple[float, float] | None = None
        self.tree_ms = self.own_ms = None

    def _read(self) -> tuple[float, float]:
        return tree_cpu_seconds(self.pid), cpu_seconds(self.pid)

    def start(self) -> None:
        if self.pid is not None:
            self._start = self._read()

    def stop(self, answers: int) -> None:
        if self._start is not None and answers:
            tree, own = self._read()
            self.tree_ms = (tree - self._start[0]) * 1000 / answers
            self.own_ms = (own - self._start[1]) * 1000 / answers


async def drive(
    target: str, method: str, requests: list, clients: int, duration: float, warmup: float = 1.0, pid: int | None = None
) -> Run:
    """`clients` closed-loop callers on one channel; latencies after `warmup` seconds count."""
    meter = CpuMeter(pid)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = digits_pb2_grpc.DigitClassifierStub(channel)
        call = getattr(stub, method)
        latencies: list[float] = []
        errors = no_digit = 0
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def worker(offset: int) -> None:
            nonlocal errors, no_digit
            i = offset
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    await call(requests[i % len(requests)], timeout=30)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        # An answer: a photo the preprocessing finds no digit in, or an image the
                        # model's gate refuses (NOT_A_DIGIT: 13 of the 10,000 MNIST test digits).
                        no_digit += 1
                    else:
                        errors += 1
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                i += clients

        async def meter_from() -> None:
            await asyncio.sleep(measure_from - time.perf_counter())
            meter.start()

        await asyncio.gather(meter_from(), *(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - measure_from
    meter.stop(len(latencies))
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    p50, p95, p99 = (percentile(ms, q) for q in (50, 95, 99))
    return Run(method, len(ms), errors, elapsed, p50, p95, p99, no_digit=no_digit, cpu_ms=meter.tree_ms,
               grpc_cpu_ms=meter.own_ms)  # fmt: skip


async def drive_stream(
    target: str, items: list, clients: int, duration: float, warmup: float = 1.0, pid: int | None = None,
    window: int = 128,
) -> Run:
    """`clients` PredictStream calls, each on its own channel, each keeping `window` items in flight
    (a heavy client that sends the next item as an answer comes back); an item's latency is from
    its write to its answer. Images/s counts the answers within the measured seconds."""
    meter = CpuMeter(pid)
    latencies: list[float] = []
    errors = answered = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def client(offset: int) -> None:
        nonlocal errors, answered
        async with grpc.aio.insecure_channel(target) as channel:
            call = digits_pb2_grpc.DigitClassifierStub(channel).PredictStream(timeout=duration + warmup + 60)
            sent: dict[int, float] = {}
            slots = asyncio.Semaphore(window)

            async def send() -> None:
                seq = 0
                while True:
                    await slots.acquire()
                    if time.perf_counter() >= stop_at:
                        break
                    sent[seq] = time.perf_counter()
                    await call.write(digits_pb2.PredictStreamRequest(id=seq, item=items[(offset + seq) % len(items)]))
                    seq += 1
                await call.done_writing()

            writer = asyncio.ensure_future(send())
            async for answer in call:
                t1 = time.perf_counter()
                t0 = sent.pop(answer.id)
                slots.release()
                refused = answer.result.error.reason in ("NO_DIGIT_FOUND", "NOT_A_DIGIT")
                if answer.result.WhichOneof("outcome") == "error" and not refused:
                    errors += 1
                elif measure_from <= t1 <= stop_at:
                    answered += 1
                    latencies.append(t1 - t0)
            await writer

    async def meter_from() -> None:
        await asyncio.sleep(measure_from - time.perf_counter())
        meter.start()

    async def meter_to() -> None:
        await asyncio.sleep(stop_at - time.perf_counter())
        meter.stop(answered)

    await asyncio.gather(meter_from(), meter_to(), *(client(k * 997) for k in range(clients)))
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    p50, p95, p99 = (percentile(ms, q) for q in (50, 95, 99))
    return Run("PredictStream", len(ms), errors, duration, p50, p95, p99, cpu_ms=meter.tree_ms,
               grpc_cpu_ms=meter.own_ms)  # fmt: skip


async def measured(server: ServerProcess, name: str, method: str, requests: list, clients: int, duration: float) -> Run:
    before = batch_stats(server.metrics_url)
    pid = server.process.pid if server.process else None
    if method == "PredictStream":
        run = await drive_stream(server.target, requests, clients, duration, pid=pid)
    else:
        run = await drive(server.target, method, requests, clients, duration, pid=pid)
    after = batch_stats(server.metrics_url)
    run.name = name
    if after[1] > before[1]:
        run.mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return run


def model_ceiling(
    model: Path, device: str, runtime: str, batch: int = 256, seconds: float = 2.0
) -> tuple[float, int]:
    """In-process images/s of the bare model at batch 256, in the server's runtime: the best over
    torch thread counts."""
    pixels = bytes(np.random.default_rng(0).integers(0, 256, 784 * batch, dtype=np.uint8))
    best = (0.0, 0)
    for threads in sorted({1, os.cpu_count() or 1}):
        runner = ModelRunner(
            model, device, threads=threads, graph=runtime == "torchscript", runtime=runtime if "onnx" in runtime else ""
        )
        runner.predict(pixels, batch)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            runner.predict(pixels, batch)
            n += 1
        best = max(best, (n * batch / (time.perf_counter() - t0), threads))
    torch.set_num_threads(os.cpu_count() or 1)
    return best


async def idle_latency(target: str, request, n: int = 300) -> tuple[float, float]:
    """One request at a time: (p50, p99) in ms, end to end through a real channel."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = digits_pb2_grpc.DigitClassifierStub(channel)
        for _ in range(20):
            await stub.Predict(request)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await stub.Predict(request)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return percentile(times, 50), percentile(times, 99)


async def exactness(target: str, split, model: Path) -> dict:
    """All test images as `pixels` through the server vs the offline evaluation's accuracy; an image
    the not-a-digit gate refuses counts as digit 10 (never right) on both sides."""
    loaded = load_checkpoint(model)
    logits = collect_logits(loaded.model, split)
    offline = report(logits, split.labels, loaded.temperature)
    offline_pred = logits.argmax(1).numpy()
    if loaded.gate is not None:
        with torch.no_grad():
            out = torch.cat([loaded.served()(x.float().div(255).unsqueeze(1)) for x in split.images.split(1000)])
        offline_pred[(out[:, NOT_A_DIGIT_INDEX] >= loaded.gate.threshold).numpy()] = NOT_A_DIGIT_INDEX
    images = split.images.numpy()
    sem = asyncio.Semaphore(256)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = digits_pb2_grpc.DigitClassifierStub(channel)

        async def one(i: int) -> int:
            async with sem:
                try:
                    request = digits_pb2.PredictRequest(pixels=images[i].tobytes())
                    return (await stub.Predict(request, timeout=60)).digit
                except grpc.aio.AioRpcError as exc:
                    if "doesn't look like a digit" in (exc.details() or ""):
                        return NOT_A_DIGIT_INDEX
                    raise

        served = np.array(await asyncio.gather(*(one(i) for i in range(len(images)))))
    labels = split.labels.numpy()
    return {
        "images": len(images),
        "server_correct": int((served == labels).sum()),
        "offline_correct": int((offline_pred == labels).sum()),
        "server_accuracy": float((served == labels).mean()),
        "offline_accuracy": float((offline_pred == labels).mean()),  # the gate's refusals as errors
        "offline_accuracy_without_gate": float(offline.accuracy),
        "refused_not_a_digit": int((served == NOT_A_DIGIT_INDEX).sum()),
        "predictions_differing_from_offline": int((served != offline_pred).sum()),
        "model_version": loaded.version,
    }


def line(run: Run) -> str:
    batch = f"{run.mean_batch:6.1f}" if run.mean_batch is not None else "     -"
    cpu = f"{run.cpu_ms:7.3f} {run.grpc_cpu_ms:7.3f}" if run.cpu_ms is not None else "      -       -"
    return (
        f"{run.name:<34} {run.rps:9.0f} {run.p50_ms:8.2f} {run.p95_ms:8.2f} {run.p99_ms:8.2f} {batch} {cpu}"
        f" {run.errors:6d}"
        + (f"  ({run.no_digit} answered NO_DIGIT_FOUND or NOT_A_DIGIT)" if run.no_digit else "")
    )


async def main_async(args: argparse.Namespace) -> dict:
    split = load_split("test", download=False)
    pixel_requests = [digits_pb2.PredictRequest(pixels=img.tobytes()) for img in split.images[:2000].numpy()]
    rng = np.random.default_rng(0)
    photos = [digits_pb2.PredictRequest(image=phone_photo(img, rng=rng)) for img in split.images[:64].numpy()]
    common = ["--device", args.device, "--max-queue", "4096", "--log-level", "WARNING"]
    if args.workers:
        common += ["--workers", str(args.workers)]
    if args.torch_threads:
        common += ["--torch-threads", str(args.torch_threads)]
    common += ["--runtime", "eager" if args.eager else args.runtime]
    # The load generator is Python too: a full collection over torch's objects stalled all 64
    # callers for ~50 ms at a time, which showed up as the servers' p99. Freeze what exists now.
    gc.freeze()
    results: dict = {"device": args.device, "clients": args.clients, "duration_s": args.duration}

    batched_args = common + ["--max-batch-size", str(args.max_batch_size), "--max-batch-delay-ms", str(args.delay_ms)]
    rounds: list[dict[str, Run]] = []
    ceilings: list[tuple[float, int]] = []
    variant_env = dict(v.split("=", 1) for v in args.variant_env)
    with contextlib.ExitStack() as servers:
        on = servers.enter_context(ServerProcess(args.model, batched_args))
        off = servers.enter_context(ServerProcess(args.model, common + ["--max-batch-size", "1"]))
        variant = None
        if args.variant_args or variant_env:  # a third, batched server with other settings, measured alongside
            variant_cmd = batched_args + args.variant_args
            variant = servers.enter_context(ServerProcess(args.model, variant_cmd, env=variant_env))
        version = (await drive_ping_version(on.target)) or "?"
        stream_items = pixel_requests
        # Interleaved rounds: load from other processes drifts, and it then hits every run alike.
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}: model ceiling, Ping, batched, unbatched, stream ...", flush=True)
            ceilings.append(model_ceiling(args.model, args.device, "eager" if args.eager else args.runtime))
            rd = {
                "ping": await measured(on, f"no-op Ping, {args.clients} clients", "Ping", [digits_pb2.PingRequest()],
                                       args.clients, args.duration),
                "batched": await measured(on, f"pixels batched, {args.clients} clients", "Predict", pixel_requests,
                                          args.clients, args.duration),
                "unbatched": await measured(off, f"pixels unbatched, {args.clients} clients", "Predict",
                                            pixel_requests, args.clients, args.duration),
                "stream": await measured(on, f"PredictStream pixels, {args.stream_clients} streams", "PredictStream",
                                         stream_items, args.stream_clients, args.duration),
            }  # fmt: skip
            if variant is not None:
                label = " ".join(args.variant_args + args.variant_env)[:22]
                rd["variant"] = await measured(variant, f"batched {label}", "Predict", pixel_requests, args.clients,
                                               args.duration)  # fmt: skip
            rounds.append(rd)
        idle_p50, idle_p99 = await idle_latency(on.target, pixel_requests[0])
        if variant is not None:  # the variant's own idle latency, right after the batched server's
            results["variant_idle_p50_ms"], results["variant_idle_p99_ms"] = await idle_latency(
                variant.target, pixel_requests[0]
            )
        print("photos ...", flush=True)
        photo_run = await measured(on, f"photos 640x480, {args.photo_clients} clients", "Predict", photos,
                                   args.photo_clients, args.duration)  # fmt: skip
        print("PredictBatch ...", flush=True)
        per_call = 64
        batches = [
            digits_pb2.PredictBatchRequest(items=pixel_requests[i : i + per_call])
            for i in range(0, len(pixel_requests), per_call)
        ]
        batch_run = await measured(on, f"PredictBatch x{per_call} pixels, 4 clients", "PredictBatch", batches, 4,
                                   args.duration)  # fmt: skip
        if not args.skip_exact:
            print("exactness: 10,000 test images as pixels ...", flush=True)
            results["exactness"] = await exactness(on.target, split, args.model)

    def median_run(key: str) -> Run:
        return sorted((rd[key] for rd in rounds), key=lambda run: run.rps)[len(rounds) // 2]

    ping, batched, unbatched = median_run("ping"), median_run("batched"), median_run("unbatched")
    stream = median_run("stream")
    ceiling_model, ceiling_threads = sorted(ceilings)[len(ceilings) // 2]
    runs = [ping, batched, unbatched, stream, photo_run] + ([median_run("variant")] if "variant" in rounds[0] else [])
    ratios = sorted(rd["batched"].rps / rd["unbatched"].rps for rd in rounds)
    ratio = ratios[len(ratios) // 2]
    lower = min(ceiling_model, ping.rps)
    print()
    print(f"digits-server benchmark: model {version}, device {args.device}, {os.cpu_count()} CPU cores, "
          f"{args.duration:g} s per run, torch {torch.__version__}")  # fmt: skip
    print(f"{'run':<34} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'CPU ms':>7} "
          f"{'gRPC ms':>7} {'errors':>6}")  # fmt: skip
    for i, rd in enumerate(rounds):
        print(f"round {i + 1}:")
        for run in rd.values():
            print("  " + line(run))
        print(f"  {f'model ceiling, batch 256, {ceilings[i][1]} thr':<34} {ceilings[i][0]:9.0f}")
    print(f"median of {len(rounds)} round(s), and the photo run:")
    for run in runs:
        print("  " + line(run))
    print(f"  {f'model ceiling, batch 256, {ceiling_threads} thr':<34} {ceiling_model:9.0f}")
    print("  " + line(batch_run))
    images_per_s = batch_run.rps * per_call
    print(f"    = {images_per_s:.0f} images/s in calls of {per_call}: {images_per_s / ceiling_model:.0%} of the model "
          f"ceiling, {images_per_s / batched.rps:.1f}x the batched Predict run")  # fmt: skip
    print(f"  batched/unbatched per round: {', '.join(f'{x:.2f}x' for x in ratios)}")
    if "variant" in rounds[0]:
        v_rps = ", ".join(f"{rd['variant'].rps / rd['batched'].rps:.2f}x" for rd in rounds)
        v_cpu = ", ".join(f"{rd['variant'].cpu_ms / rd['batched'].cpu_ms:.2f}x" for rd in rounds)
        print(f"  variant/batched per round: req/s {v_rps}; server CPU per request {v_cpu}")
        print(f"  variant, one request at idle: p50 {results['variant_idle_p50_ms']:.2f} ms "
              f"(p99 {results['variant_idle_p99_ms']:.2f})")  # fmt: skip
    print()
    checks = [
        (f"batched / unbatched (median of rounds) = {ratio:.2f}x", ratio >= 2.5, ">= 2.5x"),
        (f"batched / lower ceiling ({lower:.0f}/s) = {batched.rps / lower:.0%}", batched.rps >= 0.5 * lower, ">= 50%"),
        (f"batched p99 = {batched.p99_ms:.1f} ms", batched.p99_ms <= 50, "<= 50 ms"),
        (f"batched server CPU = {batched.cpu_ms:.3f} ms per request ({batched.grpc_cpu_ms:.3f} in the gRPC process)",
         batched.cpu_ms <= 0.6, "<= 0.6 ms"),
        (f"PredictStream, {args.stream_clients} streams = {stream.rps:.0f} images/s "
         f"({stream.cpu_ms:.3f} ms server CPU per image)", stream.rps >= 5000, ">= 5,000/s"),
        (f"one request at idle: p50 {idle_p50:.2f} ms (p99 {idle_p99:.2f})", idle_p50 <= 3, "<= 3 ms"),
        (f"photos = {photo_run.rps:.0f}/s", photo_run.rps >= 100, ">= 100/s"),
    ]
    if "exactness" in results:
        e = results["exactness"]
        same = e["server_correct"] == e["offline_correct"]
        checks.append((f"{e['images']} pixels: server {e['server_correct']} correct ({e['server_accuracy']:.4f}) vs "
                       f"offline evaluation {e['offline_correct']} ({e['offline_accuracy']:.4f}), "
                       f"{e['predictions_differing_from_offline']} predictions differ, "
                       f"{e['refused_not_a_digit']} answered NOT_A_DIGIT",
                       same and e["predictions_differing_from_offline"] == 0, "exactly equal"))  # fmt: skip
    for text, ok, target in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}  (target {target})")
    results.update(
        model_version=version,
        runs=[{**asdict(r), "rps": r.rps} for r in runs],
        rounds=[{k: {**asdict(v), "rps": v.rps} for k, v in rd.items()} for rd in rounds],
        model_ceiling_rps=ceiling_model,
        predict_batch={**asdict(batch_run), "calls_per_s": batch_run.rps, "images_per_s": images_per_s},
        idle_p50_ms=idle_p50,
        idle_p99_ms=idle_p99,
        checks=[{"check": t, "met": ok, "target": tg} for t, ok, tg in checks],
    )
    return results


async def drive_ping_version(target: str) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        return (
            await digits_pb2_grpc.DigitClassifierStub(channel).Ping(digits_pb2.PingRequest(), timeout=10)
        ).model_version


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--clients", type=int, default=64, help="concurrent callers for pixels and Ping")
    p.add_argument("--photo-clients", type=int, default=16, help="concurrent callers for photos")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (after 1 s warm-up)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--delay-ms", type=float, default=2.0, help="--max-batch-delay-ms of the batching server")
    p.add_argument("--workers", type=int, default=None, help="server preprocessing workers (default: all cores)")
    p.add_argument("--torch-threads", type=int, default=None, help="server --torch-threads (default: its own)")
    p.add_argument("--eager", action="store_true", help="servers and ceiling run the model eagerly (server --eager)")
    p.add_argument("--runtime", default="onnx", help="server --runtime, also used by the model ceiling")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ceiling/Ping/batched/unbatched")
    p.add_argument("--stream-clients", type=int, default=4, help="concurrent PredictStream calls")
    p.add_argument(
        "--variant-args",
        type=shlex.split,
        default=[],
        help="server flags of a third batched server, measured in every round beside the others, in one string: "
        "--variant-args='--runtime eager'",
    )
    p.add_argument("--variant-env", nargs="*", default=[], metavar="NAME=VALUE", help="environment of that server")
    p.add_argument("--skip-exact", action="store_true", help="skip the 10,000-image exactness check")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    results = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
