"""Issue 14, case by case, against a real server: hostile input and faults get the status a client
can act on, bounded memory, one log line, and health that tells the truth.

Figures (CPU seconds, peak and settled memory) are measured by benchmarks/hostile_bench.py; these
tests check the behaviour."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from digits.v1 import digits_pb2, digits_pb2_grpc
from digits.v1.errors import error_info

from client import BadRequest, DigitsClient, error_from_rpc
from testkit import proctree
from testkit.hostile import sixteen_bit_png
from testkit.server_process import REPO_ROOT, ServerProcess, health_status

MODEL_TIMEOUT = 2.0
DECODE_MB = 200  # one 16-bit 6000x6600 PNG (80 MB decoded) fits; three in one call do not


@pytest.fixture(scope="module")
def server(shipped_model_path):
    args = [
        "--workers", "1",
        "--model-timeout", str(MODEL_TIMEOUT),
        "--max-decode-mb", str(DECODE_MB),
        "--max-connection-idle-s", "1",
    ]  # fmt: skip
    with ServerProcess(shipped_model_path, args) as running:
        yield running


@pytest.fixture(scope="module")
def png16() -> bytes:
    return sixteen_bit_png()


def scrape(server: ServerProcess, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + labels + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def model_pid(server: ServerProcess) -> int:
    return int(re.findall(r"(?:model_pid=|model process restarted \(pid )(\d+)", server.log())[-1])


def worker_pids(server: ServerProcess) -> list[int]:
    """The preprocessing workers: the forkserver's children other than the model process."""
    helpers = proctree.tree(server.process.pid)[1:]
    forkservers = [p for p in helpers if proctree.children_of({p})]
    return sorted(proctree.children_of(set(forkservers)) - {model_pid(server)})


def wait_health(server: ServerProcess, want: str, timeout: float) -> float:
    """Seconds until health says `want`; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if health_status(server.target, timeout=0.5) == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"health not {want} after {timeout} s:\n{server.log()[-2000:]}")


async def raw_bytes_call(target: str, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    """Send `payload` as the request message itself, no protobuf encoding on our side."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/digits.v1.DigitClassifier/{method}")  # no serializers: raw bytes
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(payload, timeout=10)
    return info.value


# 1. A small 16-bit PNG that decodes to 80 MB -----------------------------------------------------


async def test_a_16_bit_png_is_read_within_bounded_memory(server, png16):
    assert len(png16) < 200_000
    async with DigitsClient(server.target, timeout=30) as client:
        prediction = await client.predict_image(png16)
    assert prediction.digit == 7, prediction
    # Each helper's high-water mark: the full-size float copies this image used to get cost ~1 GB.
    for pid in worker_pids(server):
        assert proctree.peak_rss_bytes(pid) < 400 * 2**20, (pid, proctree.peak_rss_bytes(pid))


# 5. A PredictBatch whose decoded images cannot fit is refused before any decoding ---------------


async def test_an_oversized_batch_is_refused_before_decoding(server, png16):
    workers = worker_pids(server)
    cpu_before = sum(proctree.cpu_seconds(p) for p in workers)
    request = digits_pb2.PredictBatchRequest(items=[digits_pb2.PredictRequest(image=png16)] * 3)
    async with grpc.aio.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await digits_pb2_grpc.DigitClassifierStub(channel).PredictBatch(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(info.value.trailing_metadata()).reason == "BATCH_TOO_LARGE"
    assert f"{DECODE_MB} MB" in info.value.details()
    # Decoding three of these takes the worker most of a second of CPU; a refusal takes none.
    assert sum(proctree.cpu_seconds(p) for p in workers) - cpu_before < 0.2
    # Two fit, and both are answered.
    async with DigitsClient(server.target, timeout=60) as client:
        results = await client.predict_batch(images=[png16, png16])
    assert [r.digit for r in results] == [7, 7]


# 4. Malformed request bytes -----------------------------------------------------------------------


async def test_malformed_bytes_are_bad_request_with_one_warning(server):
    garbage = b"\xff\xff\xff\xff\xff\xff"
    log_before = server.log()
    for method in ("Predict", "PredictBatch", "Ping") * 5:
        error = await raw_bytes_call(server.target, method, garbage)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error)
        assert error_info(error.trailing_metadata()).reason == "BAD_REQUEST"
    assert isinstance(error_from_rpc(error), BadRequest)
    new = server.log()[len(log_before) :]
    assert len(re.findall(r"WARNING .*unparsable", new)) == 1, new  # one line per client per minute
    assert "Traceback" not in new and "ERROR" not in new, new
    # The server is unharmed.
    async with DigitsClient(server.target) as client:
        assert await client.ping()


# 6. Idle connections -------------------------------------------------------------------------------


def test_an_idle_raw_http2_connection_is_closed(server):
    host, port = server.target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # preface + SETTINGS
        start = time.monotonic()
        while True:  # the server's SETTINGS, then (after --max-connection-idle-s 1) GOAWAY and EOF
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            assert time.monotonic() - start < 14, "the idle connection was never closed"
        assert time.monotonic() - start < 14


# 2. A preprocessing worker that dies ----------------------------------------------------------------


async def test_a_killed_worker_is_unavailable_then_retried(server, digit_samples):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(255 - digit_samples[3][0]).resize((280, 280)).save(buf, "PNG")
    photo = buf.getvalue()
    crashes = scrape(server, "digits_process_crashes_total", '{process="preprocessing"}')
    log_before = server.log()
    (victim,) = worker_pids(server)
    os.kill(victim, signal.SIGKILL)
    async with grpc.aio.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await digits_pb2_grpc.DigitClassifierStub(channel).Predict(
                digits_pb2.PredictRequest(image=photo), timeout=30
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    assert error_info(info.value.trailing_metadata()).reason == "UNAVAILABLE"
    async with DigitsClient(server.target, timeout=30) as client:  # the client's retry reaches the new pool
        assert (await client.predict_image(photo)).digit == 3
    deadline = time.monotonic() + 10  # the cause is logged once the old pool has collected its workers
    while "preprocessing worker died" not in (new := server.log()[len(log_before) :]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(re.findall(r"preprocessing worker died", new)) == 1, new
    assert "signal 9" in new and "Traceback" not in new, new
    assert scrape(server, "digits_process_crashes_total", '{process="preprocessing"}') == crashes + 1


# 3. A hung model process ---------------------------------------------------------------------------


async def test_a_stopped_model_turns_health_not_serving_then_serving_again(server):
    hung = model_pid(server)
    crashes = scrape(server, "digits_process_crashes_total", '{process="model"}')
    log_before = server.log()
    os.kill(hung, signal.SIGSTOP)
    try:
        async with DigitsClient(server.target, timeout=60, retries=0) as client:
            first = asyncio.ensure_future(client.predict_pixels(bytes(784)))  # the batch that finds it hung
            waited = await asyncio.to_thread(wait_health, server, "NOT_SERVING", MODEL_TIMEOUT + 5)
            assert waited < MODEL_TIMEOUT + 3
            with pytest.raises(Exception) as info:
                await first
            assert getattr(info.value, "code", None) == grpc.StatusCode.UNAVAILABLE, info.value
            await asyncio.to_thread(wait_health, server, "SERVING", 120)
            assert model_pid(server) != hung
            assert (await client.predict_pixels(bytes(784))).model_version
    finally:
        if proctree.state(hung) != "gone":
            os.kill(hung, signal.SIGCONT)
    new = server.log()[len(log_before) :]
    errors = [line for line in new.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "gave no answer within 2 s" in errors[0], new  # one line per crash
    assert scrape(server, "digits_process_crashes_total", '{process="model"}') == crashes + 1


# Bad flags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--max-message-mb", "2200"], "--max-message-mb"),
        (["--max-message-mb", "0"], "--max-message-mb"),
        (["--port", "70000"], "--port"),
        (["--port", "abc"], "--port"),
        (["--workers", "0"], "--workers"),
        (["--max-batch-delay-ms", "nan"], "--max-batch-delay-ms"),
        (["--model-timeout", "-1"], "--model-timeout"),
        (["--max-connection-idle-s", "0"], "--max-connection-idle-s"),
        (["--model", "/no/such/model.safetensors"], "--model"),
        (["--tls-cert", "cert.pem"], "--tls-cert"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args, named):
    done = subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in done.stderr, done.stderr
