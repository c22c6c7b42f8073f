"""bots.core: limits, refusals and formatting in isolation; error mapping against a real digits server."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from bots import core
from bots.core import Outcome, RateLimiter, Recognizer, SecretFilter, config_from_env, seen_png
from client import DigitsClient, Prediction
from testkit.photos import phone_photo
from testkit.server_process import free_port


class Clock:
    """A hand-driven clock for the rate limiter (time is an input, not a library)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prediction(probs: list[float], pixels: bytes = bytes(784)) -> Prediction:
    digit = int(np.argmax(probs))
    return Prediction(digit, probs[digit], probs, "test", pixels)


def test_rate_limiter_window_and_refusals_do_not_count():
    clock = Clock()
    limiter = RateLimiter(3, 10.0, clock=clock)
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("a") == pytest.approx(10.0)
    assert limiter.check("b") == 0.0  # per user
    clock.now += 4
    assert limiter.check("a") == pytest.approx(6.0)  # refused calls did not extend the window
    clock.now += 6
    assert limiter.check("a") == 0.0


def test_rate_limited_answer_is_polite():
    recognizer = Recognizer(DigitsClient("127.0.0.1:1"), rate=1, per_seconds=30)
    assert recognizer.rate_limited("u") is None
    answer = recognizer.rate_limited("u")
    assert answer is not None and answer.outcome == Outcome.RATE_LIMITED and "wait 30 s" in answer.text


@pytest.mark.parametrize(
    ("size", "mime", "name", "outcome"),
    [
        (11 * 1024 * 1024, "image/jpeg", None, Outcome.TOO_LARGE),
        (0, "image/png", None, Outcome.NOT_IMAGE),
        (1000, "application/pdf", "a.pdf", Outcome.NOT_IMAGE),
        (1000, None, "notes.txt", Outcome.NOT_IMAGE),
        (1000, "image/svg+xml", "a.svg", Outcome.NOT_IMAGE),
        (1000, "image/png", "a.png", None),
        (1000, None, "IMG_0001.HEIC", None),
        (None, None, None, None),
    ],
)
def test_refuse_attachment(size, mime, name, outcome):
    recognizer = Recognizer(DigitsClient("127.0.0.1:1"))
    answer = recognizer.refuse_attachment(size=size, mime_type=mime, filename=name)
    assert (answer.outcome if answer else None) == outcome
    if outcome == Outcome.TOO_LARGE:
        assert "10 MB" in answer.text


def test_seen_png_is_the_model_input_enlarged():
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[3, 5] = 255
    png = seen_png(pixels.tobytes())
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (224, 224)
    big = np.asarray(img)
    assert big[3 * 8 : 4 * 8, 5 * 8 : 6 * 8].min() == 255 and big.sum() == 255 * 64
    assert seen_png(b"short") is None


def test_answer_confident_and_low_confidence():
    recognizer = Recognizer(DigitsClient("127.0.0.1:1"), low_confidence=0.8)
    sure = recognizer.answer_for(prediction([0.01] * 7 + [0.91] + [0.01] * 2))
    assert sure.text == "It's a 7 (91% sure)." and sure.runner_up is None and sure.seen_png
    unsure = recognizer.answer_for(prediction([0.0, 0.35, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.05, 0.0]))
    assert unsure.digit == 7 and unsure.runner_up == (1, pytest.approx(0.35))
    assert "could be a 1 (35%)" in unsure.text and core.LOW_CONFIDENCE_HINT in unsure.text


async def test_recognize_maps_every_server_answer(digits_server, digit_samples):
    async with DigitsClient(digits_server.target) as client:
        recognizer = Recognizer(client, max_bytes=2 * 1024 * 1024)
        good = await recognizer.recognize(phone_photo(digit_samples[8][0]))
        assert good.outcome == Outcome.DIGIT and good.digit is not None and good.seen_png
        blank = await recognizer.recognize(phone_photo(np.zeros((28, 28), dtype=np.uint8)))
        assert blank.outcome == Outcome.NO_DIGIT and blank.text == core.NO_DIGIT_TEXT
        assert (await recognizer.recognize(b"GIF89a-but-not-really")).outcome == Outcome.NOT_IMAGE
        assert (await recognizer.recognize(b"")).outcome == Outcome.NOT_IMAGE
        assert (await recognizer.recognize(bytes(3 * 1024 * 1024))).outcome == Outcome.TOO_LARGE
        buf = io.BytesIO()
        Image.new("L", (8000, 6000), 255).save(buf, format="PNG")  # tiny file, 48 Mpx: the server refuses it
        assert (await recognizer.recognize(buf.getvalue())).outcome == Outcome.TOO_LARGE


async def test_recognize_never_raises_when_the_server_is_down():
    async with DigitsClient(f"127.0.0.1:{free_port()}", timeout=1.0) as client:
        answer = await Recognizer(client).recognize(b"\x89PNG whatever")
    assert answer.outcome == Outcome.UNAVAILABLE and answer.text == core.UNAVAILABLE_TEXT


def test_secret_filter_redacts_messages_args_and_tracebacks(caplog):
    token = "123:SECRET-abc"
    logger = logging.getLogger("test.secret")
    caplog.handler.addFilter(SecretFilter([token]))
    try:
        logger.warning("POST https://api.telegram.org/bot%s/getMe", token)
        try:
            raise RuntimeError(f"connect to /bot{token}/getUpdates failed")
        except RuntimeError:
            logger.exception("polling failed")
    finally:
        caplog.handler.filters.clear()
    assert token not in caplog.text and caplog.text.count("bot***/") == 2


def test_config_from_dotenv_with_environment_winning(tmp_path, monkeypatch):
    for key in ("DIGITS_SERVER", "DIGITS_RATE_LIMIT", "DIGITS_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / ".env").write_text("DIGITS_SERVER=from-file:1\nDIGITS_RATE_LIMIT=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGITS_SERVER", "from-env:2")
    config = config_from_env()
    assert config.digits_server == "from-env:2" and config.rate == 3 and config.api_token is None
