"""Fixtures of the end-to-end tests that several modules share."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from client import DigitsClient, InvalidInput, SeveralDigits
from model.checkpoint import load_checkpoint
from testkit.robustness_set import compose, photo
from testkit.server_process import ServerProcess


@pytest.fixture(scope="module")
def store_server(shipped_model_path, tmp_path_factory):
    """A real digits server keeping corrections in a real SQLite feedback store (`.db`), one per module
    so that each module counts only its own records."""
    db = tmp_path_factory.mktemp("feedback") / "feedback.sqlite3"
    server = ServerProcess(model=shipped_model_path, args=["--workers", "1", "--feedback-db", str(db)])
    server.start()
    server.db = db
    yield server
    server.close()


@pytest.fixture(scope="module")
def store_number_photo(store_server, digit_samples):
    """A photo of a number that the store server reads with Read (Predict refuses it as SEVERAL_DIGITS, so
    the bots take the number path), with the server's own Reading: the tests hold for any shipped model."""

    async def find():
        async with DigitsClient(store_server.target, timeout=20) as client:
            for seed, text in enumerate(["2026", "4138", "907", "35"]):
                rng = np.random.default_rng(seed)
                strip = compose([digit_samples[int(c)][0] for c in text], [0.3] * (len(text) - 1), rng)
                _, data = photo(strip, rng, ink="black", size=(640, 480))
                try:
                    await client.predict_image(data)
                except SeveralDigits:
                    return data, await client.read_image(data)
        raise AssertionError("the server read none of the number photos as several digits")

    return asyncio.run(find())


@pytest.fixture(scope="module")
def miscounted_number_photo(store_server, digit_samples):
    """A photo of a 3-digit number with a touching pair that the store server reads as a number (Predict:
    SEVERAL_DIGITS) but with another count of digits, and that Read cuts into the 3 digits when told them:
    (photo, the true number, the plain Reading). Searched for, so the tests hold for any shipped model."""

    async def find():
        async with DigitsClient(store_server.target, timeout=20) as client:
            for i, text in enumerate(["311", "611", "250", "733", "500", "700", "468", "900"]):
                for gap in (-0.2, -0.3, -0.1):
                    rng = np.random.default_rng(i)
                    strip = compose([digit_samples[int(c)][0] for c in text], [0.4, gap], rng)
                    _, data = photo(strip, rng, ink="black", size=(640, 480))
                    try:
                        await client.predict_image(data)
                        continue
                    except SeveralDigits:
                        pass
                    reading = await client.read_image(data)
                    if len(reading.digits) < 2 or len(reading.digits) == len(text):
                        continue
                    try:
                        if len((await client.read_image(data, expected=text)).digits) == len(text):
                            return data, text, reading
                    except InvalidInput as exc:  # a cut too far-fetched for the model (UNMATCHED_DIGITS)
                        assert exc.reason == "UNMATCHED_DIGITS", exc
        raise AssertionError("no photo of a number with a touching pair was read with another count of digits")

    return asyncio.run(find())


@pytest.fixture(scope="module")
def reference(shipped_model_path):
    """The model in-process: what the server must answer, computed the offline evaluation's way."""
    loaded = load_checkpoint(shipped_model_path)

    @torch.inference_mode()
    def probabilities(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).view(-1, 1, 28, 28).float().div_(255)
        return torch.softmax(loaded.model(x) / loaded.temperature, dim=1).numpy()

    probabilities.version = loaded.version
    return probabilities
