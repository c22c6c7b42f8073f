"""bots.core and its modules: limits, refusals, wording, config and redaction in isolation; the flow and
the error mapping against a real digits server."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from bots import replies as core
from bots.answer import Answer, Outcome
from bots.config import ConfigError, config_from_env, core_config_from_env
from bots.core import Attachment, DownloadFailed, FileTooLarge, Recognizer, seen_png
from bots.ratelimit import InMemoryRateLimiter as RateLimiter
from bots.redact import SecretFilter
from bots.replies import plain_text
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


async def test_rate_limiter_window_and_refusals_do_not_count():
    clock = Clock()
    limiter = RateLimiter(3, 10.0, clock=clock)
    assert [await limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.check("a") == pytest.approx(10.0)
    assert await limiter.check("b") == 0.0  # per user
    clock.now += 4
    assert await limiter.check("a") == pytest.approx(6.0)  # refused calls did not extend the window
    clock.now += 6
    assert await limiter.check("a") == 0.0


async def test_rate_limited_answer_is_polite():
    recognizer = Recognizer(DigitsClient("127.0.0.1:1"), rate=1, per_seconds=30)
    assert await recognizer.rate_limited("u") is None
    answer = await recognizer.rate_limited("u")
    assert answer is not None and answer.outcome == Outcome.RATE_LIMITED and "wait 30 s" in plain_text(answer)


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
    answer = recognizer.refuse(Attachment(size, mime, name))
    assert (answer.outcome if answer else None) == outcome
    if outcome == Outcome.TOO_LARGE:
        assert "10 MB" in plain_text(answer)


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
    assert plain_text(sure) == "It's 7 (91% sure)." and sure.runner_up is None and sure.seen_png
    unsure = recognizer.answer_for(prediction([0.0, 0.35, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.05, 0.0]))
    assert unsure.digit == 7 and unsure.runner_up == (1, pytest.approx(0.35))
    assert "could be 1 (35%)" in plain_text(unsure) and core.LOW_CONFIDENCE_HINT in plain_text(unsure)
    assert unsure.hint == core.LOW_CONFIDENCE_HINT and sure.hint is None


async def test_recognize_maps_every_server_answer(digits_server, digit_samples):
    async with DigitsClient(digits_server.target) as client:
        recognizer = Recognizer(client, max_bytes=2 * 1024 * 1024)
        good = await recognizer.recognize(phone_photo(digit_samples[8][0]))
        assert good.outcome == Outcome.DIGIT and good.digit is not None and good.seen_png
        blank = await recognizer.recognize(phone_photo(np.zeros((28, 28), dtype=np.uint8)))
        assert blank.outcome == Outcome.NO_DIGIT and plain_text(blank) == core.NO_DIGIT_TEXT
        assert (await recognizer.recognize(b"GIF89a-but-not-really")).outcome == Outcome.NOT_IMAGE
        assert (await recognizer.recognize(b"")).outcome == Outcome.NOT_IMAGE
        assert (await recognizer.recognize(bytes(3 * 1024 * 1024))).outcome == Outcome.TOO_LARGE
        buf = io.BytesIO()
        Image.new("L", (8000, 6000), 255).save(buf, format="PNG")  # tiny file, 48 Mpx: the server refuses it
        assert (await recognizer.recognize(buf.getvalue())).outcome == Outcome.TOO_LARGE


async def test_recognize_never_raises_when_the_server_is_down():
    async with DigitsClient(f"127.0.0.1:{free_port()}", timeout=1.0) as client:
        answer = await Recognizer(client).recognize(b"\x89PNG whatever")
    assert answer.outcome == Outcome.UNAVAILABLE and plain_text(answer) == core.UNAVAILABLE_TEXT


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


# -- the one flow: rate limit, refuse before download, download, recognize ------------------------------
class Downloads:
    """A platform's download callable that records each call and returns or raises what it is given."""

    def __init__(self, result: bytes | Exception) -> None:
        self.result = result
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def test_handle_refuses_before_download_and_counts_every_request():
    recognizer = Recognizer(DigitsClient("127.0.0.1:1"), rate=2, per_seconds=60)
    accepted: list[str] = []

    async def on_accepted() -> None:
        accepted.append("typing")

    pdf = Downloads(b"%PDF")
    refused = await recognizer.handle("u", Attachment(100, "application/pdf", "a.pdf"), pdf, on_accepted=on_accepted)
    animated = await recognizer.handle("u", Attachment(100, "image/webp", still=False), pdf, on_accepted=on_accepted)
    assert (refused.outcome, refused.accepted) == (Outcome.NOT_IMAGE, False)
    assert (animated.outcome, animated.accepted) == (Outcome.NOT_STILL, False)
    limited = await recognizer.handle("u", Attachment(100, "image/png"), pdf, on_accepted=on_accepted)
    assert (limited.outcome, limited.accepted) == (Outcome.RATE_LIMITED, False) and limited.retry_after > 59
    assert pdf.calls == 0 and accepted == []  # nothing was downloaded, no typing shown


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (FileTooLarge("file is too big"), Outcome.TOO_LARGE),
        (DownloadFailed("connection reset"), Outcome.DOWNLOAD_FAILED),
        (RuntimeError("a bug in the platform adapter"), Outcome.DOWNLOAD_FAILED),
        (b"", Outcome.NOT_IMAGE),
        (bytes(11 * 1024 * 1024), Outcome.TOO_LARGE),  # the platform under-reported the size
    ],
)
async def test_handle_maps_download_results(result, outcome):
    recognizer = Recognizer(DigitsClient("127.0.0.1:1"))
    download = Downloads(result)
    order: list[str] = []

    async def on_accepted() -> None:
        order.append(f"accepted after {download.calls} downloads")

    answer = await recognizer.handle(f"u-{outcome}", Attachment(1000, "image/png"), download, on_accepted=on_accepted)
    assert (answer.outcome, answer.accepted) == (outcome, True)
    assert order == ["accepted after 0 downloads"] and download.calls == 1
    if outcome == Outcome.TOO_LARGE:
        assert answer.limit_bytes == 10 * 1024 * 1024 and "10 MB" in plain_text(answer)


async def test_handle_reads_a_digit_through_the_real_server(digits_server, digit_samples):
    async with DigitsClient(digits_server.target) as client:
        photo = phone_photo(digit_samples[0][0])
        answer = await Recognizer(client).handle("u", Attachment(len(photo), "image/jpeg"), Downloads(photo))
        direct = await client.predict_image(photo)
    assert answer.outcome == Outcome.DIGIT and answer.accepted
    assert (answer.digit, answer.confidence) == (direct.digit, pytest.approx(direct.confidence))
    assert (answer.runner_up is None) == (direct.confidence >= 0.80) == (answer.hint is None)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_has_wording(outcome):
    answer = Answer(outcome, digit=3, confidence=0.5, runner_up=(8, 0.4), hint=core.LOW_CONFIDENCE_HINT)
    text = plain_text(answer)
    assert text and text != plain_text(Answer(next(o for o in Outcome if o != outcome), digit=3, confidence=0.5))
    assert plain_text(answer, {outcome: "custom"}) == "custom"


# -- configuration: every setting validated at start-up ----------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DIGITS_RATE_LIMIT", "0"),
        ("DIGITS_RATE_LIMIT", "-1"),
        ("DIGITS_RATE_LIMIT", "abc"),
        ("DIGITS_RATE_LIMIT", "2.5"),
        ("DIGITS_RATE_WINDOW", "0"),
        ("DIGITS_RATE_WINDOW", "nan"),
        ("DIGITS_RATE_WINDOW", "soon"),
        ("DIGITS_MAX_BYTES", "10MB"),
        ("DIGITS_MAX_BYTES", "0"),
        ("DIGITS_LOW_CONFIDENCE", "80"),
        ("DIGITS_LOW_CONFIDENCE", "-0.1"),
        ("DIGITS_TIMEOUT", "inf"),
        ("DIGITS_TIMEOUT", "-5"),
        ("DIGITS_SERVER", "host name:50051"),
        ("DIGITS_REDIS_URL", "localhost:6379"),
        ("DIGITS_REDIS_URL", "redis://"),
    ],
)
def test_bad_shared_setting_is_one_line_naming_it(name, value):
    with pytest.raises(ConfigError) as info:
        core_config_from_env({name: value})
    message = str(info.value)
    assert message.startswith(name) and "\n" not in message and "must be" in message


def test_settings_parse_and_the_redis_password_is_never_echoed():
    config = core_config_from_env({
        "DIGITS_RATE_LIMIT": "3", "DIGITS_RATE_WINDOW": "1.5", "DIGITS_MAX_BYTES": "1024",
        "DIGITS_LOW_CONFIDENCE": "0", "DIGITS_TIMEOUT": "2", "DIGITS_SERVER": "dns:///digits:50051",
        "DIGITS_REDIS_URL": "redis://:hunter2@cache:6379/0", "DIGITS_API_TOKEN": "tok-secret",
    })
    assert (config.rate, config.per_seconds, config.max_bytes, config.low_confidence, config.timeout) == (
        3, 1.5, 1024, 0.0, 2.0)
    assert config.digits_server == "dns:///digits:50051" and config.redis_url == "redis://:hunter2@cache:6379/0"
    assert "hunter2" not in repr(config) and "tok-secret" not in repr(config)
    with pytest.raises(ConfigError) as info:
        core_config_from_env({"DIGITS_REDIS_URL": "http://:hunter2@cache:6379"})
    assert "hunter2" not in str(info.value)
    assert core_config_from_env({"DIGITS_RATE_LIMIT": "  "}).rate == 10  # empty means the default
    assert core_config_from_env({"DIGITS_REDIS_URL": "unix:///run/redis.sock"}).redis_url == "unix:///run/redis.sock"
