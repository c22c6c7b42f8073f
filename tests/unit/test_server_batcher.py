"""The dynamic batcher in-process, with the real model behind it (no server, no mocks)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from server.batcher import Batcher, DeadlineExpired, QueueFull
from server.model_runner import ModelRunner


@pytest.fixture(scope="module")
def runner(shipped_model_path):
    return ModelRunner(shipped_model_path, "cpu", threads=1)


class Recording:
    """Wraps the real model call and remembers the size of every batch it ran."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner, self.sizes = runner, []

    def __call__(self, pixels: bytes, n: int):
        self.sizes.append(n)
        return self.runner.predict(pixels, n)


def test_the_frozen_graph_answers_exactly_like_the_eager_model(runner, shipped_model_path, mnist_test):
    """The server runs TorchScript by default; its probabilities must be the eager model's, bit for
    bit, at every batch size, or the server would disagree with the offline evaluation."""
    graph = ModelRunner(shipped_model_path, "cpu", threads=1, graph=True)
    assert graph.runtime == "torchscript" and runner.runtime == "eager"
    images = mnist_test.images[:1000].numpy()
    for n in (1, 7, 64, 1000):
        eager_digits, eager_probs = runner.predict_arrays(images[:n].tobytes(), n)
        graph_digits, graph_probs = graph.predict_arrays(images[:n].tobytes(), n)
        assert np.array_equal(eager_digits, graph_digits) and np.array_equal(eager_probs, graph_probs), n


async def test_batches_respect_the_size_limit_and_keep_answers_in_order(runner, mnist_test):
    record = Recording(runner)
    batcher = Batcher(record, max_batch_size=16, max_delay_s=0.005, max_queue=1000)
    batcher.start()
    images = mnist_test.images[:100].numpy()
    try:
        results = await asyncio.gather(*(batcher.submit(img.tobytes()) for img in images))
    finally:
        await batcher.close()
    assert sum(record.sizes) == 100 and max(record.sizes) == 16 and len(record.sizes) < 100
    expected = runner.predict(images.tobytes(), len(images))
    assert [r[0] for r in results] == [e[0] for e in expected]
    assert np.allclose([r[2] for r in results], [e[2] for e in expected], atol=1e-5)


async def test_batch_size_one_turns_batching_off(runner):
    record = Recording(runner)
    batcher = Batcher(record, max_batch_size=1, max_delay_s=0.002)
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(bytes(784)) for _ in range(10)))
    finally:
        await batcher.close()
    assert record.sizes == [1] * 10


async def test_expired_and_cancelled_requests_never_reach_the_model(runner):
    record = Recording(runner)
    dropped = []
    batcher = Batcher(record, max_batch_size=8, max_delay_s=0.05, on_drop=dropped.append)
    batcher.start()
    try:
        expired = asyncio.ensure_future(batcher.submit(bytes(784), timeout=0.01))
        cancelled = asyncio.ensure_future(batcher.submit(bytes(784)))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(DeadlineExpired):
            await expired
        assert (await batcher.submit(bytes(784)))[0] in range(10)
    finally:
        await batcher.close()
    assert sorted(dropped) == ["cancelled", "deadline"]
    assert record.sizes == [1], "only the live request was computed"


async def test_the_model_takes_batches_while_the_event_loop_is_busy(runner):
    """Under load the event loop is busy with the traffic of the last batch; the inference thread
    must not wait for it to hand out the next one."""
    record = Recording(runner)
    batcher = Batcher(record, max_batch_size=4, max_delay_s=0)
    batcher.start()
    try:
        waiting = [asyncio.ensure_future(batcher.submit(bytes(784))) for _ in range(12)]
        await asyncio.sleep(0)  # every request is queued
        time.sleep(1.0)  # the loop is stuck; the model thread goes on on its own
        assert sum(record.sizes) == 12 and max(record.sizes) <= 4, record.sizes
        assert len(await asyncio.gather(*waiting)) == 12
    finally:
        await batcher.close()


async def test_full_queue_fails_at_once(runner):
    batcher = Batcher(runner.predict, max_batch_size=4, max_delay_s=0.2, max_queue=3)
    batcher.start()
    try:
        waiting = [asyncio.ensure_future(batcher.submit(bytes(784))) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(bytes(784))
        assert len(await asyncio.gather(*waiting)) == 3
    finally:
        await batcher.close()


def test_cuda_is_never_a_silent_cpu_fallback():
    import torch

    from model.checkpoint import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


async def test_preprocessing_pool_bounds_pending_bytes_and_maps_reasons(digit_samples):
    import io

    from PIL import Image

    from server.failures import RequestFailed
    from server.preprocess_pool import PreprocessPool

    buf = io.BytesIO()
    Image.fromarray(255 - digit_samples[5][0]).resize((280, 280)).save(buf, "PNG")
    png = buf.getvalue()
    pool = PreprocessPool(workers=1, max_pending_bytes=len(png) + 10)
    try:
        outcomes = await asyncio.gather(pool(png), pool(png), return_exceptions=True)
        assert len(outcomes[0]) == 784 and isinstance(outcomes[1], RequestFailed), outcomes
        assert outcomes[1].reason == "QUEUE_FULL" and outcomes[1].code.name == "RESOURCE_EXHAUSTED"
        with pytest.raises(RequestFailed) as info:
            await pool(b"not an image at all")
        assert info.value.reason == "UNREADABLE_IMAGE"
        assert pool.pending == 0 and pool.pending_bytes == 0
    finally:
        pool.close()


async def test_a_batch_is_admitted_by_decoded_size_whole_or_not_at_all(digit_samples):
    """Admission reads each header: a 28x28 PNG file of a few hundred bytes that decodes to
    1000x1000 counts a megabyte, and a batch that cannot fit is refused before anything is decoded."""
    import io

    from PIL import Image

    from server.failures import RequestFailed
    from server.preprocess_pool import PreprocessPool

    buf = io.BytesIO()
    Image.fromarray(255 - digit_samples[4][0]).resize((1000, 1000)).save(buf, "PNG")
    png = buf.getvalue()
    pool = PreprocessPool(workers=1, max_pending_bytes=2_500_000)
    try:
        assert pool.cost(png) == 1000 * 1000 and pool.cost(b"junk") == 4
        with pytest.raises(RequestFailed) as info:
            await pool.decode_many([png] * 3)  # 3 MB decoded can never fit in 2.5 MB
        assert info.value.reason == "BATCH_TOO_LARGE" and pool.pending == 0
        first = asyncio.ensure_future(pool.decode_many([png, png]))
        await asyncio.sleep(0)
        with pytest.raises(RequestFailed) as info:
            await pool.decode_many([png, png])  # fits alone, not beside the pending two
        assert info.value.reason == "QUEUE_FULL" and info.value.code.name == "RESOURCE_EXHAUSTED"
        results = await first
        assert [len(r) for r in results] == [784, 784]
        assert pool.pending == 0 and pool.pending_bytes == 0
    finally:
        pool.close()


class Gated(Recording):
    """The real model, whose first call waits for `gate`: the test decides when the model becomes free
    and which requests arrive while it is busy. `times` holds when each call started."""

    def __init__(self, runner: ModelRunner) -> None:
        super().__init__(runner)
        self.gate, self.first_done, self.times = threading.Event(), threading.Event(), []

    def __call__(self, pixels: bytes, n: int):
        self.times.append(time.monotonic())
        if len(self.sizes) == 0:
            self.gate.wait(10)
            self.first_done.set()
        return super().__call__(pixels, n)


def busy_fill_batcher(record, policy: str, max_delay_s: float) -> Batcher:
    batcher = Batcher(record, max_batch_size=64, max_delay_s=max_delay_s, policy=policy)
    # Prime the estimates as after heavy traffic (1M requests/s, 1 s per model call): the fill target
    # is then the whole batch, so what leaves is decided by the arrivals and the cap alone.
    batcher._rate, batcher._infer_s = 1e6, 1.0
    return batcher


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


@pytest.mark.parametrize("policy, expected", [("fill", [1, 8]), ("eager", [1, 3, 5])])
async def test_fill_merges_requests_that_arrive_after_the_model_became_free(runner, policy, expected):
    """Under load (3 requests piled up during a long model call, past their own max_delay_s), "fill"
    holds the next batch open for requests that arrive shortly after the model became free; "eager"
    sends the 3 at once."""
    record = Gated(runner)
    batcher = busy_fill_batcher(record, policy, max_delay_s=0.5)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(bytes(784)))  # lone at idle: leaves at once
        while not record.times:
            await asyncio.sleep(0.005)
        piled = [asyncio.ensure_future(batcher.submit(bytes(784))) for _ in range(3)]
        await asyncio.sleep(0.7)
        record.gate.set()
        await wait_for(record.first_done)
        await asyncio.sleep(0.1)  # well inside fill's 0.5 s; eager has taken the 3 by now
        later = [asyncio.ensure_future(batcher.submit(bytes(784))) for _ in range(5)]
        assert len(await asyncio.wait_for(asyncio.gather(first, *piled, *later), 10)) == 9
    finally:
        await batcher.close()
    assert record.sizes == expected


async def test_fill_waits_at_most_the_delay_after_the_model_became_free(runner):
    """When the expected company does not come, the piled-up requests leave after max_delay_s counted
    from the moment the model became free (not from their arrival, long past by then)."""
    record = Gated(runner)
    batcher = busy_fill_batcher(record, "fill", max_delay_s=0.3)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(bytes(784)))
        while not record.times:
            await asyncio.sleep(0.005)
        piled = [asyncio.ensure_future(batcher.submit(bytes(784))) for _ in range(3)]
        await asyncio.sleep(0.5)  # the 3 have waited longer than max_delay_s before the model is free
        freed = time.monotonic()
        record.gate.set()
        results = await asyncio.wait_for(asyncio.gather(first, *piled), 10)
    finally:
        await batcher.close()
    assert len(results) == 4 and record.sizes == [1, 3], record.sizes
    assert record.times[1] - freed >= 0.3, "the batch left before the extra wait was over"


async def test_fill_keeps_the_lone_request_fast_path_at_idle(runner):
    """At idle nothing is queued when the model is free, so "fill" changes nothing: a lone request
    does not wait for the (here 30 s) delay."""
    record = Recording(runner)
    batcher = busy_fill_batcher(record, "fill", max_delay_s=30)
    batcher.start()
    try:
        for _ in range(3):
            await asyncio.wait_for(batcher.submit(bytes(784)), 10)
    finally:
        await batcher.close()
    assert record.sizes == [1, 1, 1]


def test_fill_target_is_the_arrivals_expected_during_one_model_call():
    batcher = Batcher(lambda pixels, n: [], max_batch_size=64, policy="fill")
    batcher._rate, batcher._infer_s = 2000.0, 0.0105  # 2,000 requests/s, 10.5 ms per call
    assert batcher.fill_target() == 21
    batcher._rate = 1e5
    assert batcher.fill_target() == 64
    batcher._rate = 0.0
    assert batcher.fill_target() == 2
    with pytest.raises(ValueError, match="policy"):
        Batcher(lambda pixels, n: [], policy="greedy")
