"""`digits-server` / `python -m server`: flags, start-up order, health, reflection, graceful drain.

Start-up: check every flag (one line naming a bad one, exit 2), bind the port with health
NOT_SERVING, load and warm the model and the preprocessing workers, then flip health to SERVING.
Health turns NOT_SERVING while the model process is being replaced (it died, or gave no answer
within --model-timeout) and SERVING again when the replacement answers. SIGTERM/SIGINT: health
NOT_SERVING, new requests get UNAVAILABLE, in-flight requests finish, exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from functools import partial
from pathlib import Path

import grpc
from digits.v1 import digits_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from preprocessing import DEFAULT_MAX_PIXELS
from server import memory
from server.auth import TokenInterceptor
from server.flags import OneLineParser, validate
from server.metrics import Metrics
from server.model_protocol import DEFAULT_BATCH_TIMEOUT, ModelSettings
from server.model_reload import ModelReloader
from server.preprocess_pool import PreprocessPool
from server.scaling import connection_age_options
from server.service import DigitClassifierService
from server.wire import add_service

log = logging.getLogger("digits.server")

SERVICE_NAME = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name
TOKEN_ENV = "DIGITS_API_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="digits-server",
        description="Serve the digits model over gRPC (digits.v1.DigitClassifier) with dynamic batching.",
        epilog=f"Set {TOKEN_ENV} to require `authorization: Bearer <token>` on every Predict/Ping call.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0: pick a free one, logged at start-up)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped models/ checkpoint)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the model runs")
    p.add_argument("--max-batch-size", type=int, default=64, help="largest model call; 1 turns batching off")
    p.add_argument("--max-batch-delay-ms", type=float, default=2.0, help="longest a request waits for a batch to fill")
    p.add_argument(
        "--no-eager-idle",
        dest="eager_idle",
        action="store_false",
        help="always hold a request up to --max-batch-delay-ms, even when traffic is one-at-a-time",
    )
    p.add_argument(
        "--batch-policy",
        choices=("eager", "fill"),
        default="eager",
        help="under load, eager: the model takes whatever is queued when it is free; fill: it waits (at most "
        "--max-batch-delay-ms after it became free) for the requests expected during one model call",
    )
    p.add_argument("--max-queue", type=int, default=1024, help="requests waiting beyond this get RESOURCE_EXHAUSTED")
    p.add_argument(
        "--stream-window",
        type=int,
        default=256,
        help="unanswered items one PredictStream may hold; the server stops reading that stream until answers drain",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image preprocessing processes")
    p.add_argument(
        "--runtime",
        choices=("onnx", "onnx-int8", "torchscript", "eager"),
        default="onnx",
        help="how the model runs on CPU: ONNX Runtime (exported at first start and cached; used only if it matches "
        "eager on a probe batch, else eager runs), int8 ONNX (faster in some runs, not exact: only if asked), "
        "TorchScript (deprecated upstream), or eager PyTorch",
    )
    p.add_argument("--eager", action="store_true", help="same as --runtime eager")
    p.add_argument("--torch-threads", type=int, default=None, help="CPU intra-op threads (default: cores - 1)")
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics port (0: off)")
    p.add_argument("--max-message-mb", type=float, default=20.0, help="larger requests get RESOURCE_EXHAUSTED")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="decoded images over this are refused")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (with --tls-key: serve TLS)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    p.add_argument("--grace", type=float, default=10.0, help="seconds in-flight requests get to finish on SIGTERM")
    p.add_argument(
        "--drain-delay", type=float, default=0.25, help="seconds health shows NOT_SERVING before the port closes"
    )
    p.add_argument(
        "--reload-poll",
        type=float,
        default=1.0,
        help="seconds between checks of the --model file: when it is replaced, the new model is loaded and "
        "switched in with no downtime (SIGHUP does the same at once; 0: on SIGHUP only)",
    )
    p.add_argument(
        "--max-connection-age",
        type=float,
        default=0.0,
        help="seconds after which a client connection is closed gracefully, so clients of a DNS name "
        "(dns:///, a Kubernetes headless Service) look it up again and find new replicas (0: never)",
    )
    p.add_argument(
        "--grpc-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gRPC server channel argument (repeatable; integers are passed as integers), "
        "e.g. grpc.enable_channelz=0",
    )
    p.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop under grpc.aio (uvloop must be installed)",
    )
    p.add_argument(
        "--feedback-db",
        type=Path,
        default=None,
        help="SQLite file that keeps users' corrections (Feedback/Forget RPCs); without it Feedback is refused",
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument(
        "--model-timeout",
        type=float,
        default=DEFAULT_BATCH_TIMEOUT,
        help="seconds a batch may take; a model process silent for longer turns health NOT_SERVING and is replaced",
    )
    p.add_argument(
        "--max-decode-mb",
        type=float,
        default=640.0,
        help="decoded image memory (read from the headers) all pending images may take; beyond it RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--max-connection-idle-s",
        type=float,
        default=300.0,
        help="close a connection that has had no call for this long (clients reconnect by themselves)",
    )
    p.add_argument(
        "--keepalive-s",
        type=float,
        default=60.0,
        help="ping each connection after this much silence; one that does not answer within 20 s is closed",
    )
    return p


def _grpc_args(pairs: list[str]) -> list[tuple[str, str | int]]:
    """`--grpc-arg NAME=VALUE` as gRPC channel arguments; a number is passed as an int."""
    out: list[tuple[str, str | int]] = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        out.append((name, int(value) if value.lstrip("-").isdigit() else value))
    return out


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    from server.batcher import Batcher
    from server.inference_process import InferenceProcess

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hup = asyncio.Event()  # SIGHUP: reload the --model file (server/model_reload.py)
    loop.add_signal_handler(signal.SIGHUP, hup.set)

    metrics = Metrics()
    fatal: list[str] = []
    draining = False

    def on_model_health(up: bool) -> None:  # from the inference or restart thread
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING

        async def flip() -> None:
            if not draining:
                for name in ("", SERVICE_NAME):
                    await health.set(name, status)

        loop.call_soon_threadsafe(lambda: loop.create_task(flip()))

    def on_fatal(reason: str) -> None:  # from the inference thread: the model cannot come back
        fatal.append(reason)
        loop.call_soon_threadsafe(stop.set)

    feedback_store = None
    if args.feedback_db is not None:
        from server.feedback_store import FeedbackStore

        try:
            feedback_store = FeedbackStore(args.feedback_db)
        except Exception as exc:  # unwritable folder, not a database...: one clear line
            log.error("cannot open the feedback store %s: %s", args.feedback_db, exc)
            return 2
        log.info("feedback store: %s (%d records)", feedback_store.path.resolve(), feedback_store.count())
    pool = PreprocessPool(
        args.workers,
        max_pixels=args.max_pixels,
        max_pending=args.max_queue,
        max_pending_bytes=int(args.max_decode_mb * 2**20),
        on_crash=metrics.crashes.labels("preprocessing").inc,
    )
    service = DigitClassifierService(metrics, pool, feedback_store, stream_window=args.stream_window)
    health = HealthServicer()
    token = os.environ.get(TOKEN_ENV) or None
    max_message = int(args.max_message_mb * 1024 * 1024)
    server = grpc.aio.server(
        interceptors=[TokenInterceptor(token)] if token else None,
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),  # a port already in use is an error, not a silent second server
            ("grpc.max_connection_idle_ms", int(args.max_connection_idle_s * 1000)),
            ("grpc.keepalive_time_ms", int(args.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # clients may ping every 10 s
            *connection_age_options(args.max_connection_age, args.grace),
            *_grpc_args(args.grpc_arg),
        ],
    )
    add_service(service, server)  # like the generated registration, but bad bytes get BAD_REQUEST
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{args.host}:{args.port}"
    try:
        if args.tls_cert:
            creds = grpc.ssl_server_credentials([(args.tls_key.read_bytes(), args.tls_cert.read_bytes())])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        await server.start()
        if args.metrics_port:
            metrics.serve(args.metrics_port, args.host)
    except (RuntimeError, OSError) as exc:  # port in use, unreadable key...: one clear line, not a traceback
        log.error("cannot listen on %s (metrics port %s): %s", address, args.metrics_port or "off", exc)
        await server.stop(None)
        return 2

    try:
        # The model process and the preprocessing workers start side by side.
        runtime = "eager" if args.eager else args.runtime
        settings = ModelSettings(
            args.model,
            args.device,
            threads=args.torch_threads,
            graph=runtime == "torchscript",
            warm_to=args.max_batch_size,
            runtime=runtime if runtime.startswith("onnx") else "",
        )
        start_process = partial(  # called again for every reload, with the new file's settings
            InferenceProcess,
            batch_timeout=args.model_timeout,
            on_crash=metrics.crashes.labels("model").inc,
            on_health=on_model_health,
            on_restart=metrics.model_restarts.inc,
            on_fatal=on_fatal,
        )
        start_model = partial(ModelReloader, start_process, settings, registry=metrics.registry)
        runner, _ = await asyncio.gather(loop.run_in_executor(None, start_model), pool.warm_up())
    except Exception as exc:  # a bad checkpoint or device: say so plainly and exit non-zero
        log.error("cannot start: %s", exc)
        await server.stop(None)
        pool.close()
        return 2

    batcher = Batcher(
        runner.predict,
        max_batch_size=args.max_batch_size,
        max_delay_s=args.max_batch_delay_ms / 1000,
        max_queue=args.max_queue,
        eager_when_idle=args.eager_idle,
        policy=args.batch_policy,
        on_batch=metrics.batch_size.observe,
        on_drop=lambda reason: metrics.dropped.labels(reason).inc(),
    )
    batcher.start()
    metrics.queue_depth.set_function(lambda: batcher.depth)
    metrics.model.info({"version": runner.version, "device": runner.info.device, "runtime": runner.info.runtime})
    service.ready(batcher, runner.version)

    def on_switch(info) -> None:  # a reload switched models: Ping and the metric say so from now on
        metrics.model.info({"version": info.version, "device": info.device, "runtime": info.runtime})
        service.model_version = info.version
        on_model_health(True)  # the new model answered its probe (even if the old one had just failed)

    runner.on_switch = on_switch
    watcher = asyncio.create_task(runner.watch(args.reload_poll if args.model else 0, hup))
    # Everything allocated so far (libraries, protobuf descriptors, the app) lives as long as the
    # process. Frozen, the collector stops re-scanning it: a full collection under load took
    # 70-90 ms on the 2-core development machine and stalled every in-flight request; now it only
    # walks request-time objects.
    gc.freeze()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving model %s on %s:%d device=%s runtime=%s model_pid=%s torch_threads=%s max_batch_size=%d "
        "max_batch_delay_ms=%g batch_policy=%s eager_idle=%s max_queue=%d workers=%d metrics_port=%s tls=%s token=%s",
        runner.version,
        args.host,
        port,
        runner.info.device,
        runner.info.runtime,
        runner.pid,
        runner.info.threads or "-",
        args.max_batch_size,
        args.max_batch_delay_ms,
        args.batch_policy,
        args.eager_idle,
        args.max_queue,
        args.workers,
        args.metrics_port or "off",
        "on" if args.tls_cert else "off",
        "on" if token else "off",
    )

    trimmer = loop.create_task(_trim_memory_every(10.0))
    await stop.wait()
    draining = True
    trimmer.cancel()
    if fatal:
        log.error("stopping: %s", fatal[0])
    log.info("draining: health NOT_SERVING, finishing in-flight requests (grace %gs)", args.grace)
    service.draining = True  # new Predict calls now get UNAVAILABLE (SHUTTING_DOWN)
    await health.enter_graceful_shutdown()
    await asyncio.sleep(args.drain_delay)  # let health checkers see NOT_SERVING while the port is still open
    await server.stop(args.grace)
    watcher.cancel()
    await batcher.close()
    runner.close()
    pool.close()
    if feedback_store is not None:
        feedback_store.close()
    if fatal:
        log.error("stopped: the model could not be restarted (exit code 1, for a supervisor to start afresh)")
        return 1
    log.info("stopped cleanly")
    return 0


async def _trim_memory_every(seconds: float) -> None:
    """Hand freed heap pages back now and then, so memory after a burst returns near idle."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        await loop.run_in_executor(None, memory.trim)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(parser, args)
    memory.use_mmap_for_large_blocks()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.event_loop == "uvloop":
        import uvloop

        return uvloop.run(serve(args))
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
