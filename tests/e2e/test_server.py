"""End-to-end tests of digits-server: a real server process on a free loopback port, real clients.

The slow full-test-set exactness check (10,000 images) lives in benchmarks/server_bench.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from digits.v1 import digits_pb2, digits_pb2_grpc
from digits.v1.errors import DOMAIN, error_info
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from PIL import Image

from client import (
    BadPixels,
    DigitsClient,
    ImageTooLarge,
    NoDigitFound,
    Overloaded,
    ServerUnavailable,
    UnreadableImage,
)
from preprocessing import preprocess
from testkit.server_process import ServerProcess, health_status


def encode(pixels: np.ndarray, fmt: str = "PNG", size: int = 280) -> bytes:
    """A photo-like file: dark ink on white paper, upscaled, like a phone picture of a digit."""
    buf = io.BytesIO()
    Image.fromarray(255 - pixels).resize((size, size), Image.BILINEAR).save(buf, fmt)
    return buf.getvalue()


async def raw_call(target: str, request: digits_pb2.PredictRequest, timeout: float = 10.0) -> grpc.aio.AioRpcError:
    """Call Predict with the bare generated stub and return the error (the test expects one)."""
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await digits_pb2_grpc.DigitClassifierStub(channel).Predict(request, timeout=timeout)
    return info.value


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def metric(text: str, name: str) -> float:
    """Sum of every sample called exactly `name` (any labels)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"metric {name} not exported"
    return total


# --- predictions -------------------------------------------------------------------------------


async def test_pixels_prediction_matches_the_model(digits_server, digit_samples, reference):
    image = digit_samples[7][0]
    async with DigitsClient(digits_server.target) as client:
        p = await client.predict_pixels(image.tobytes())
    expected = reference(image[None])[0]
    assert p.digit == int(expected.argmax())
    assert p.confidence == pytest.approx(float(expected.max()), abs=1e-5)
    assert np.allclose(p.probabilities, expected, atol=1e-5)
    assert sum(p.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert p.model_version == reference.version
    assert p.pixels == image.tobytes()
    second, second_p = p.runner_up
    assert second != p.digit and second_p <= p.confidence


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_image_prediction_uses_the_preprocessing(digits_server, digit_samples, reference, fmt):
    data = encode(digit_samples[2][1], fmt)
    local = preprocess(data)
    async with DigitsClient(digits_server.target) as client:
        p = await client.predict_image(data)
    assert p.pixels == local.pixels.tobytes(), "the reply must carry the 28x28 image the model saw"
    assert p.digit == int(reference(local.pixels[None])[0].argmax())


async def test_500_concurrent_requests_each_get_their_own_answer(digits_server, mnist_test, reference):
    images = mnist_test.images[:500].numpy()
    before = scrape(digits_server.metrics_url)
    async with DigitsClient(digits_server.target, timeout=30) as client:
        replies = await asyncio.gather(*(client.predict_pixels(img.tobytes()) for img in images))
    after = scrape(digits_server.metrics_url)
    expected = reference(images)
    got = np.array([r.probabilities for r in replies])
    assert [r.pixels for r in replies] == [img.tobytes() for img in images]
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert np.allclose(got, expected, atol=1e-5)
    batches = metric(after, "digits_batch_size_count") - metric(before, "digits_batch_size_count")
    assert 0 < batches < 500, "concurrent requests should have shared model calls"


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (digits_pb2.PredictRequest(), "NO_INPUT"),
        (digits_pb2.PredictRequest(image=b"definitely not an image"), "UNREADABLE_IMAGE"),
        (digits_pb2.PredictRequest(image=b"\x89PNG\r\n\x1a\n" + bytes(64)), "UNREADABLE_IMAGE"),
        (digits_pb2.PredictRequest(pixels=bytes(783)), "BAD_PIXELS"),
        (digits_pb2.PredictRequest(pixels=bytes(785)), "BAD_PIXELS"),
    ],
    ids=["no-input", "text", "truncated-png", "short-pixels", "long-pixels"],
)
async def test_invalid_input_gets_invalid_argument_with_reason(digits_server, request_, reason):
    error = await raw_call(digits_server.target, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error.trailing_metadata())
    assert info is not None and info.domain == DOMAIN and info.reason == reason
    assert len(error.details()) > 10, "a person must be able to understand the message"


async def test_image_without_a_digit(digits_server):
    blank = io.BytesIO()
    Image.new("L", (300, 200), 255).save(blank, "PNG")
    async with DigitsClient(digits_server.target) as client:
        with pytest.raises(NoDigitFound) as info:
            await client.predict_image(blank.getvalue())
    assert info.value.reason == "NO_DIGIT_FOUND" and info.value.message


async def test_image_over_the_pixel_limit(digits_server):
    huge = io.BytesIO()
    Image.new("L", (8000, 6000), 255).save(huge, "PNG")  # 48 Mpx, a few kB compressed
    async with DigitsClient(digits_server.target) as client:
        with pytest.raises(ImageTooLarge) as info:
            await client.predict_image(huge.getvalue())
    assert info.value.reason == "IMAGE_TOO_LARGE"


async def test_message_over_the_size_limit_is_resource_exhausted(digits_server):
    error = await raw_call(digits_server.target, digits_pb2.PredictRequest(image=bytes(21 * 1024 * 1024)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with DigitsClient(digits_server.target) as client:
        with pytest.raises(ImageTooLarge) as info:
            await client.predict_image(bytes(21 * 1024 * 1024))
        assert info.value.reason == "MESSAGE_TOO_LARGE"
        assert (await client.predict_pixels(bytes(784))).model_version, "the server keeps serving"


async def test_client_rejects_bad_pixels_and_unreadable_images(digits_server):
    async with DigitsClient(digits_server.target) as client:
        with pytest.raises(BadPixels):
            await client.predict_pixels(b"\x00" * 100)
        with pytest.raises(UnreadableImage):
            await client.predict_image(b"GIF89a garbage")


async def test_expired_deadline(digits_server):
    async with DigitsClient(digits_server.target, timeout=0.0005, retries=0) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.predict_pixels(bytes(784))
    assert info.value.reason == "DEADLINE_EXCEEDED"
    async with DigitsClient(digits_server.target) as client:
        assert (await client.predict_pixels(bytes(784))).digit in range(10)


# --- PredictBatch ----------------------------------------------------------------------------------


async def test_predict_batch_answers_every_item_in_order(digits_server, mnist_test, digit_samples, reference):
    images = mnist_test.images[:40].numpy()
    blank = io.BytesIO()
    Image.new("L", (300, 200), 255).save(blank, "PNG")
    photo = digit_samples[3][0]
    async with DigitsClient(digits_server.target, timeout=30) as client:
        results = await client.predict_batch(
            pixels=[img.tobytes() for img in images] + [bytes(783)],
            images=[encode(photo), b"not an image at all", blank.getvalue()],
        )
        single = await client.predict_image(encode(photo))
    assert len(results) == 44
    expected = reference(images)
    for result, probs in zip(results[:40], expected, strict=True):
        assert result.digit == int(probs.argmax()) and np.allclose(result.probabilities, probs, atol=1e-5)
    assert [r.pixels for r in results[:40]] == [img.tobytes() for img in images]
    assert isinstance(results[40], BadPixels) and "783" in results[40].message
    assert results[41].pixels == single.pixels and results[41].digit == single.digit
    # alone or among 40 others, the matrix kernels may round differently in the last bits
    assert np.allclose(results[41].probabilities, single.probabilities, atol=1e-6)
    assert isinstance(results[42], UnreadableImage) and isinstance(results[43], NoDigitFound)


async def test_predict_batch_refuses_an_empty_or_oversized_call(digits_server):
    async with grpc.aio.insecure_channel(digits_server.target) as channel:
        stub = digits_pb2_grpc.DigitClassifierStub(channel)
        too_many = [digits_pb2.PredictRequest(pixels=bytes(784))] * 1025  # the queue holds 1024
        for items, reason in (([], "NO_INPUT"), (too_many, "BATCH_TOO_LARGE")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.PredictBatch(digits_pb2.PredictBatchRequest(items=items), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(info.value.trailing_metadata()).reason == reason, info.value.details()


async def test_predict_batch_is_queued_whole_or_not_at_all(shipped_model_path, mnist_test):
    """The first call's 6 items wait in the queue (500 ms batch delay); the second call's 6 would
    overflow the queue of 8, so none of them is queued and the call is RESOURCE_EXHAUSTED."""
    args = ["--max-queue", "8", "--max-batch-size", "256", "--max-batch-delay-ms", "500", "--no-eager-idle"]
    with ServerProcess(shipped_model_path, args + ["--workers", "1"]) as server:
        pixels = [img.tobytes() for img in mnist_test.images[:6].numpy()]
        async with DigitsClient(server.target, timeout=10, retries=0) as client:
            first = asyncio.ensure_future(client.predict_batch(pixels=pixels))
            await asyncio.sleep(0.2)
            with pytest.raises(Overloaded) as info:
                await client.predict_batch(pixels=pixels)
            assert info.value.reason == "QUEUE_FULL"
            assert [r.pixels for r in await first] == pixels
            assert len(await client.predict_batch(pixels=pixels)) == 6, "the server keeps serving"
        text = scrape(server.metrics_url)
        assert metric(text, "digits_batch_size_sum") == 12, "the refused call's items never reached the model"
        assert 'digits_requests_total{code="RESOURCE_EXHAUSTED",method="PredictBatch"} 1.0' in text


# --- health, reflection, metrics -----------------------------------------------------------------


def test_one_start_up_line_with_version_device_and_batching(digits_server, reference):
    lines = [line for line in digits_server.log().splitlines() if "serving model" in line]
    assert len(lines) >= 1, digits_server.log()
    assert reference.version in lines[0] and "device=" in lines[0] and "max_batch_size=64" in lines[0]
    assert "runtime=onnx" in lines[0] and "model_pid=" in lines[0]
    assert "Traceback" not in digits_server.log() and "Logging error" not in digits_server.log()


def test_health_is_serving_for_the_server_and_the_service(digits_server):
    assert health_status(digits_server.target) == "SERVING"
    assert health_status(digits_server.target, "digits.v1.DigitClassifier") == "SERVING"
    assert health_status(digits_server.target, "no.such.Service") == "UNREACHABLE"  # NOT_FOUND


def test_reflection_lists_the_service(digits_server):
    with grpc.insecure_channel(digits_server.target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        assert "digits.v1.DigitClassifier" in services
        assert "grpc.health.v1.Health" in services
        file = db.FindFileContainingSymbol("digits.v1.DigitClassifier")
        methods = {m.name for s in file.service for m in s.method}
        assert {"Predict", "PredictBatch", "Ping"} <= methods


async def test_metrics_endpoint_scrapes(digits_server, reference):
    async with DigitsClient(digits_server.target) as client:
        await client.predict_pixels(bytes(784))
        with pytest.raises(BadPixels):
            await client._predict(digits_pb2.PredictRequest(pixels=b"x"))
    text = scrape(digits_server.metrics_url)
    assert 'digits_requests_total{code="OK",method="Predict"}' in text
    assert 'digits_requests_total{code="INVALID_ARGUMENT",method="Predict"}' in text
    assert metric(text, "digits_request_latency_seconds_count") >= 2
    assert metric(text, "digits_batch_size_count") >= 1
    metric(text, "digits_queue_depth")
    assert f'version="{reference.version}"' in text


# --- outage, overload, shutdown --------------------------------------------------------------------


async def test_client_recovers_after_an_outage(digits_server):
    async with DigitsClient(digits_server.target, timeout=2, retries=2) as client:
        assert (await client.predict_pixels(bytes(784))).model_version
        assert digits_server.stop() == 0
        with pytest.raises(ServerUnavailable):
            await client.predict_pixels(bytes(784))
        digits_server.start()
        assert (await client.predict_pixels(bytes(784))).model_version


def wait_until_dead(pid: int, timeout: float = 10.0) -> None:
    """Dead means gone or a zombie: the server reaps its model process only when it notices."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):  # gone, possibly between open and read
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still alive after {timeout} s")


async def test_a_dead_model_process_is_replaced_and_the_server_keeps_serving(shipped_model_path, mnist_test):
    with ServerProcess(shipped_model_path, ["--workers", "1"]) as server:
        pid = int(re.search(r"model_pid=(\d+)", server.log()).group(1))
        image = mnist_test.images[0].numpy().tobytes()
        async with DigitsClient(server.target, timeout=60, retries=0) as once, DigitsClient(server.target) as user:
            before = await once.predict_pixels(image)
            os.kill(pid, signal.SIGKILL)
            wait_until_dead(pid)
            with pytest.raises(ServerUnavailable) as info:
                await once.predict_pixels(image)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE and "model process died" in str(info.value)
            after = await once.predict_pixels(image)  # the next batch starts a new model process
            assert after.digit == before.digit and after.probabilities == before.probabilities
            assert (await user.predict_pixels(image)).digit == before.digit
        assert "restarting the model process" in server.log() and "died (signal 9)" in server.log()
        assert "Traceback" not in server.log(), "a known failure is one line in the log"
        assert health_status(server.target) == "SERVING"


async def test_a_model_that_cannot_come_back_stops_the_server(shipped_model_path, tmp_path):
    """Crash-only: rather than answer UNAVAILABLE forever while health says SERVING, the server
    drains and exits 1, and its supervisor (digits-run, Docker, Kubernetes) starts it afresh."""
    model, private = tmp_path / "model.safetensors", tmp_path / "tmp"
    shutil.copy(shipped_model_path, model)
    private.mkdir()
    server = ServerProcess(model, ["--workers", "1"], env={"TMPDIR": str(private)}).start()
    try:
        pid = int(re.search(r"model_pid=(\d+)", server.log()).group(1))
        # A restart loads the server's pinned copy of the model it was running (server/model_reload.py),
        # never the file on disk: it is that copy that must go bad for the restart to fail.
        pinned = list(private.glob("digits-model-*/*.safetensors"))
        assert len(pinned) == 1, pinned
        pinned[0].write_bytes(b"overwritten by a bad deploy")
        os.kill(pid, signal.SIGKILL)
        wait_until_dead(pid)
        async with DigitsClient(server.target, timeout=30, retries=0) as client:
            for _ in range(2):  # the batch that finds the process dead, then the one whose restart fails
                with pytest.raises(ServerUnavailable):
                    await client.predict_pixels(bytes(784))
        assert server.process.wait(30) == 1, server.log()
        assert "could not be restarted" in server.log() and "not a readable safetensors checkpoint" in server.log()
    finally:
        server.close()


async def test_ctrl_c_drains_quietly(shipped_model_path, digit_samples):
    """Ctrl-C in a terminal signals the whole process group: the model process and the preprocessing
    workers must leave the shutdown to the server, which drains and exits 0 without tracebacks."""
    server = ServerProcess(shipped_model_path, ["--workers", "2"], own_group=True).start()
    try:
        async with DigitsClient(server.target) as client:
            assert (await client.predict_image(encode(digit_samples[2][0]))).digit == 2
        server.signal_group(signal.SIGINT)
        assert server.process.wait(30) == 0, server.log()
        assert "stopped cleanly" in server.log() and "Traceback" not in server.log(), server.log()
    finally:
        server.close()


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except FileNotFoundError:
                continue
            todo += children - found
            found |= children
    return found


def test_a_killed_server_leaves_no_process_behind(shipped_model_path):
    """SIGKILL (the OOM killer, `docker kill`) gives no chance to clean up: the model process and the
    preprocessing workers must notice on their own, or every supervised restart leaks them."""
    server = ServerProcess(shipped_model_path, ["--workers", "2"]).start()
    helpers: set[int] = set()
    try:
        helpers = descendants(server.process.pid)
        assert len(helpers) >= 4, helpers  # forkserver, resource tracker, model, 2 workers
        server.process.kill()
        server.process.wait(10)
        for pid in helpers:
            wait_until_dead(pid)
    finally:
        server.close()
        for pid in helpers:  # a failed run must not leave its orphans to the other tests
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("flags", "name"), [(["--eager"], "eager"), (["--runtime", "torchscript"], "torchscript")])
async def test_other_runtimes_give_the_same_answers(shipped_model_path, digits_server, mnist_test, flags, name):
    """The default runtime (ONNX Runtime) against eager and TorchScript (whose logits equal eager's):
    the same digits, probabilities within the 1e-5 that tests/unit/test_runtimes.py checks on all
    10,000 test images."""
    images = mnist_test.images[:32].numpy()
    with ServerProcess(shipped_model_path, ["--workers", "1", *flags]) as other:
        assert f"runtime={name}" in other.log()
        async with DigitsClient(other.target) as slow, DigitsClient(digits_server.target) as fast:
            for image in images:
                a, b = await slow.predict_pixels(image.tobytes()), await fast.predict_pixels(image.tobytes())
                assert a.digit == b.digit
                assert np.abs(np.subtract(a.probabilities, b.probabilities)).max() <= 1e-5


async def test_overload_is_resource_exhausted_and_the_server_keeps_serving(shipped_model_path, mnist_test):
    args = ["--max-batch-size", "1", "--max-queue", "4", "--workers", "1", "--max-batch-delay-ms", "0"]
    with ServerProcess(shipped_model_path, args) as server:
        images = mnist_test.images[:300].numpy()
        async with DigitsClient(server.target, timeout=60) as client:
            outcomes = await asyncio.gather(
                *(client.predict_pixels(img.tobytes()) for img in images), return_exceptions=True
            )
            overloaded = [o for o in outcomes if isinstance(o, Overloaded)]
            served = [o for o in outcomes if not isinstance(o, Exception)]
            assert len(overloaded) + len(served) == len(outcomes), [o for o in outcomes if isinstance(o, Exception)][:3]
            assert overloaded and served
            assert all(o.reason == "QUEUE_FULL" and o.code == grpc.StatusCode.RESOURCE_EXHAUSTED for o in overloaded)
            assert (await client.predict_pixels(images[0].tobytes())).pixels == images[0].tobytes()


async def test_expired_request_is_dropped_before_inference(shipped_model_path):
    """Two requests arrive together, so the batcher holds them up to its 400 ms delay; the one
    with a 100 ms deadline expires meanwhile and the model only ever sees the other."""
    args = ["--max-batch-size", "256", "--max-batch-delay-ms", "400", "--no-eager-idle", "--workers", "1"]
    with ServerProcess(shipped_model_path, args) as server:
        async with (
            DigitsClient(server.target, timeout=0.1, retries=0) as hasty,
            DigitsClient(server.target, timeout=10) as patient,
        ):
            outcomes = await asyncio.gather(
                hasty.predict_pixels(bytes(784)), patient.predict_pixels(bytes(784)), return_exceptions=True
            )
        assert isinstance(outcomes[0], ServerUnavailable) and outcomes[0].reason == "DEADLINE_EXCEEDED", outcomes
        assert outcomes[1].model_version
        text = scrape(server.metrics_url)
        assert metric(text, "digits_dropped_total") == 1
        assert metric(text, "digits_batch_size_sum") == 1, "the expired request must not reach the model"


async def test_health_transitions_and_graceful_shutdown(shipped_model_path, mnist_test):
    args = ["--max-batch-size", "256", "--max-batch-delay-ms", "700", "--no-eager-idle", "--workers", "1"]
    args += ["--drain-delay", "0.3"]
    server = ServerProcess(shipped_model_path, args).start(wait=False)
    try:
        seen = []
        fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 50)]
        async with grpc.aio.insecure_channel(server.target, options=fast_reconnect) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="digits.v1.DigitClassifier")
            while True:  # before the model is loaded the port is open and health says NOT_SERVING
                try:
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name((await stub.Check(request)).status))
                except grpc.aio.AioRpcError:
                    assert server.running, server.log()
                    await asyncio.sleep(0.02)
                    continue
                if seen[-1] == "SERVING":
                    break
                await asyncio.sleep(0.02)
        assert seen[0] == "NOT_SERVING" and seen[-1] == "SERVING", seen

        images = mnist_test.images[:20].numpy()
        async with DigitsClient(server.target, timeout=20, retries=0) as client:
            in_flight = [asyncio.ensure_future(client.predict_pixels(img.tobytes())) for img in images]
            await asyncio.sleep(0.3)  # they now wait in the batcher (700 ms batch delay)
            server.signal()
            await asyncio.sleep(0.1)
            assert health_status(server.target, "digits.v1.DigitClassifier") == "NOT_SERVING"
            with pytest.raises(ServerUnavailable):
                await client.predict_pixels(images[0].tobytes())
            replies = await asyncio.gather(*in_flight)
        assert [r.pixels for r in replies] == [img.tobytes() for img in images]
        assert server.process.wait(30) == 0
        assert "stopped cleanly" in server.log()
    finally:
        server.close()


async def test_token_and_tls(shipped_model_path, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    secret = "s3cret-token-for-tests"
    args = ["--tls-cert", str(cert), "--tls-key", str(key), "--workers", "1"]
    server = ServerProcess(shipped_model_path, args, env={"DIGITS_API_TOKEN": secret})
    try:
        server.start(credentials=grpc.ssl_channel_credentials(cert.read_bytes()))
        ca = cert.read_bytes()
        async with DigitsClient(server.target, token=secret, root_certificates=ca) as client:
            assert (await client.predict_pixels(bytes(784))).model_version
        for token in (None, "wrong"):
            async with DigitsClient(server.target, token=token, root_certificates=ca) as client:
                with pytest.raises(Exception) as info:
                    await client.predict_pixels(bytes(784))
            assert info.value.reason == "UNAUTHENTICATED"
        async with DigitsClient(server.target, token=secret, retries=0, timeout=2) as plaintext:
            with pytest.raises(ServerUnavailable):
                await plaintext.predict_pixels(bytes(784))
        assert secret not in server.log(), "the token must never be logged"
        assert json.dumps(repr(DigitsClient(server.target, token=secret))).find(secret) == -1
    finally:
        server.close()


# --- command lines -----------------------------------------------------------------------------


def test_digits_predict_prints_digit_and_confidence(digits_server, digit_samples, tmp_path):
    good = tmp_path / "four.png"
    good.write_bytes(encode(digit_samples[4][0]))
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    result = subprocess.run(
        [sys.executable, "-m", "client.predict_cli", str(good), str(bad), "--server", digits_server.target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, "one of the two files failed"
    assert result.stdout.startswith(f"{good}: ") and "confidence" in result.stdout
    assert f"{bad}: UNREADABLE_IMAGE" in result.stderr


def test_server_refuses_a_bad_checkpoint_clearly(tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--metrics-port", "0", "--model", str(bogus)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot start" in result.stderr and str(bogus) in result.stderr


def test_a_port_in_use_is_a_clear_start_up_error(digits_server):
    port = digits_server.target.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", port, "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr and "Traceback" not in result.stderr


async def test_fill_batch_policy_serves_concurrent_requests_each_their_own_answer(
    shipped_model_path, mnist_test, reference
):
    """`--batch-policy fill` is wired through: the start-up line names it, and 200 concurrent requests
    are answered in shared model calls, each with its own image's answer."""
    images = mnist_test.images[:200].numpy()
    with ServerProcess(shipped_model_path, ["--batch-policy", "fill", "--workers", "1"]) as server:
        async with DigitsClient(server.target, timeout=30) as client:
            replies = await asyncio.gather(*(client.predict_pixels(img.tobytes()) for img in images))
        text = scrape(server.metrics_url)
        assert "batch_policy=fill" in server.log()
    assert [r.pixels for r in replies] == [img.tobytes() for img in images]
    assert np.array_equal(np.array([r.probabilities for r in replies]).argmax(1), reference(images).argmax(1))
    assert metric(text, "digits_batch_size_sum") == 200 and 0 < metric(text, "digits_batch_size_count") < 200
