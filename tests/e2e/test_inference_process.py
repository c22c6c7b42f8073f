"""The model process on its own: real child processes, the shipped model, real signals."""

from __future__ import annotations

import os
import signal
import time

import pytest

from server.inference_process import InferenceProcess, InferenceUnavailable
from server.model_protocol import ModelSettings
from server.model_runner import ModelRunner


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, possibly between open and read
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def images(mnist_test):
    return mnist_test.images[:64].numpy()


def test_answers_are_the_in_process_model_s(shipped_model_path, images):
    expected = ModelRunner(shipped_model_path, "cpu", threads=1).predict(images.tobytes(), len(images))
    process = InferenceProcess(ModelSettings(shipped_model_path, "cpu", threads=1, warm_to=8))
    try:
        assert process.info.runtime == "torchscript" and process.version.startswith("digits-encoder")
        got = process.predict(images.tobytes(), len(images))
    finally:
        process.close()
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[2] for g in got] == [e[2] for e in expected], "probabilities must be identical, not just close"


def test_a_hung_model_process_is_stopped_and_replaced(shipped_model_path, images):
    process = InferenceProcess(ModelSettings(shipped_model_path, "cpu", threads=1, warm_to=8), batch_timeout=1.0)
    try:
        before = process.predict(images[:4].tobytes(), 4)
        hung = process.pid
        os.kill(hung, signal.SIGSTOP)  # alive but never answering
        start = time.monotonic()
        with pytest.raises(InferenceUnavailable, match="no answer within 1 s"):
            process.predict(images[:4].tobytes(), 4)
        assert time.monotonic() - start < 10 and not alive(hung)
        assert process.predict(images[:4].tobytes(), 4) == before
        assert process.pid != hung
    finally:
        process.close()


def test_start_up_failure_is_one_clear_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InferenceUnavailable, match="not a readable safetensors checkpoint"):
        InferenceProcess(ModelSettings(bad, "cpu", threads=1))


def test_close_ends_the_child(shipped_model_path):
    process = InferenceProcess(ModelSettings(shipped_model_path, "cpu", threads=1, warm_to=1))
    pid = process.pid
    assert alive(pid)
    process.close()
    assert not alive(pid)


def test_a_background_load_runs_niced_on_its_own_thread(monkeypatch, shipped_model_path):
    """A reload's slow part runs at nice 19 on a thread of its own; the thread that goes on to build
    and serve the model keeps its normal priority (Linux keeps nice values per thread)."""
    import threading

    import server.model_runner
    from server.inference_process import _preload_in_background

    seen: dict[str, object] = {}

    def record(path, runtime):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen["thread"] = threading.current_thread().name
        seen["args"] = (path, runtime)

    monkeypatch.setattr(server.model_runner, "preload", record)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    _preload_in_background(ModelSettings(shipped_model_path, "cpu", runtime="onnx", background=True))
    assert seen == {"nice": 19, "thread": "model-preload", "args": (shipped_model_path, "onnx")}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_a_background_load_answers_as_a_normal_one_and_its_replacement_loads_at_full_priority(
    shipped_model_path, images
):
    normal = InferenceProcess(ModelSettings(shipped_model_path, "cpu", threads=1, runtime="onnx", warm_to=8))
    try:
        expected = normal.predict(images.tobytes(), len(images))
    finally:
        normal.close()
    settings = ModelSettings(shipped_model_path, "cpu", threads=1, runtime="onnx", warm_to=8, background=True)
    process = InferenceProcess(settings)
    try:
        assert process.info.runtime == "onnx"
        assert process.predict(images.tobytes(), len(images)) == expected
        os.kill(process.pid, signal.SIGKILL)  # lost: the replacement is what every caller waits for
        with pytest.raises(InferenceUnavailable):
            process.predict(images[:4].tobytes(), 4)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                got = process.predict(images.tobytes(), len(images))
                break
            except InferenceUnavailable:
                time.sleep(0.2)
        assert got == expected
        assert process.settings.background is False
    finally:
        process.close()
