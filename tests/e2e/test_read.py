"""Read against a real server: numbers in each style, touching pairs, several lines, notebook paper,
no digit; boxes inside the image and in reading order; Predict on a number is SEVERAL_DIGITS.

Numbers are composed from MNIST test digits (the first of each class in the test set), rendered with
the benchmark's renderers (testkit/robustness_set.py)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from client import DigitsClient, InvalidInput, NoDigitFound, SeveralDigits
from testkit.photos import blank_photo
from testkit.robustness_set import compose, number_scan, number_sketch, photo, stack
from testkit.touching_pairs import flagged_pairs


@pytest.fixture(scope="module")
def clear_digits(digits_server, digit_samples) -> dict[int, np.ndarray]:
    """One test digit per class: of the first five of its class in the MNIST test set, the one the
    server reads alone (as pixels) most confidently. A doubtful digit would test the model, not Read."""

    async def pick() -> dict[int, np.ndarray]:
        best = {}
        async with DigitsClient(digits_server.target) as client:
            for d, samples in digit_samples.items():
                scored = [(await client.predict_pixels(s.tobytes())).probabilities[d] for s in samples]
                best[d] = samples[int(np.argmax(scored))]
        return best

    return asyncio.run(pick())


def number(clear_digits, text: str, gap: float = 0.25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return compose([clear_digits[int(c)] for c in text], [gap] * (len(text) - 1), rng)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return ImageOps.exif_transpose(img).size


async def read(target: str, data: bytes):
    async with DigitsClient(target, timeout=20) as client:
        return await client.read_image(data)


def assert_boxes_in_order(reading, data: bytes) -> None:
    """Every box inside the upright image; left to right within a line; lines top to bottom."""
    width, height = size_of(data)
    lines = reading.text.split("\n")
    assert sum(len(line.replace(" ", "")) for line in lines) == len(reading.digits)
    k = 0
    previous_bottom = -1
    for line in lines:
        boxes = [reading.digits[k + i].box for i in range(len(line.replace(" ", "")))]
        k += len(boxes)
        for x, y, w, h in boxes:
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height, (x, y, w, h)
        lefts = [b[0] + b[2] / 2 for b in boxes]
        assert lefts == sorted(lefts), f"not left to right: {boxes}"
        centre = np.median([b[1] + b[3] / 2 for b in boxes])
        assert centre > previous_bottom, "lines must come top to bottom"
        previous_bottom = centre


@pytest.mark.parametrize("style", ["scan", "sketch", "photo", "photo-ruled", "photo-squared"])
async def test_a_number_reads_whole_in_each_style(digits_server, clear_digits, style):
    for seed, text in enumerate(["2026", "907", "4138"], start=2):
        strip = number(clear_digits, text, seed=seed)
        rng = np.random.default_rng(seed)
        if style == "scan":
            _, data = number_scan(strip, rng)
        elif style == "sketch":
            _, data = number_sketch(strip, rng)
        else:
            paper = style.split("-")[1] if "-" in style else "plain"
            _, data = photo(strip, rng, ink="black", size=(640, 480), paper=paper)
        reading = await read(digits_server.target, data)
        assert reading.text == text, f"{style} {text}: read {reading.text!r}"
        assert len(reading.digits) == len(text)
        assert [d.digit for d in reading.digits] == [int(c) for c in text]
        assert all(len(d.pixels) == 784 and len(d.probabilities) == 10 for d in reading.digits)
        assert 0.0 < reading.confidence <= 1.0
        assert reading.model_version.startswith("digits-encoder-")
        assert_boxes_in_order(reading, data)


async def test_touching_pairs_are_split(digits_server, clear_digits):
    for text in ("00", "23", "68"):
        strip = number(clear_digits, text, gap=-0.1)
        _, data = number_scan(strip, np.random.default_rng(1))
        reading = await read(digits_server.target, data)
        assert reading.text == text, f"touching {text}: read {reading.text!r}"


async def test_several_lines_come_back_as_lines(digits_server, clear_digits):
    rng = np.random.default_rng(3)
    block = stack([number(clear_digits, "12"), number(clear_digits, "345"), number(clear_digits, "6789")], rng)
    data = png(255 - block[:, :].repeat(4, 0).repeat(4, 1))  # a scan-like bitmap: dark ink on white
    reading = await read(digits_server.target, data)
    assert reading.text == "12\n345\n6789"
    assert_boxes_in_order(reading, data)


async def test_a_wide_gap_or_a_comma_separates_groups(digits_server, clear_digits):
    left, right = number(clear_digits, "12"), number(clear_digits, "500")
    spaced = np.concatenate([left, np.zeros((left.shape[0], 40), np.uint8), right], axis=1)
    comma = np.zeros((left.shape[0], 12), np.uint8)
    comma[26:33, 5:8] = 255  # a short downward stroke on the baseline
    with_comma = np.concatenate([left, comma, right], axis=1)
    for strip in (spaced, with_comma):
        reading = await read(digits_server.target, png(255 - strip.repeat(5, 0).repeat(5, 1)))
        assert reading.text == "12 500"


async def test_a_single_digit_reads_as_predict_does(digits_server, clear_digits):
    data = png(255 - np.asarray(Image.fromarray(clear_digits[7]).resize((140, 140))))
    async with DigitsClient(digits_server.target) as client:
        reading = await client.read_image(data)
        prediction = await client.predict_image(data)
    assert reading.text == "7" == str(prediction.digit)
    assert reading.digits[0].pixels == prediction.pixels
    assert reading.digits[0].confidence == pytest.approx(prediction.confidence, abs=1e-6)
    # the whole reading, through the one-digit map, about as sure as Predict (the numbers' map said 96%)
    assert prediction.confidence > 0.99 and reading.confidence > 0.98


async def test_no_digit_is_no_digit_found(digits_server):
    with pytest.raises(NoDigitFound):
        await read(digits_server.target, blank_photo())


async def test_predict_on_a_number_is_several_digits(digits_server, clear_digits):
    _, data = number_scan(number(clear_digits, "42"), np.random.default_rng(0))
    async with DigitsClient(digits_server.target) as client:
        with pytest.raises(SeveralDigits) as info:
            await client.predict_image(data)
        assert "Read" in info.value.message
        single = png(255 - np.asarray(Image.fromarray(clear_digits[4]).resize((140, 140))))
        results = await client.predict_batch(images=[data, single])
    assert isinstance(results[0], SeveralDigits)
    assert results[1].digit == 4


@pytest.fixture(scope="module")
def merged_pairs(shipped_model_path, mnist_test):
    pairs = flagged_pairs(shipped_model_path, mnist_test.images.numpy(), mnist_test.labels.numpy(), want=8)
    assert len(pairs) == 8, "the shipped several-digits head flags touching pairs of test digits"
    return pairs


async def test_touching_digits_that_look_like_one_glyph_are_several_digits_and_mostly_read_as_two(
    digits_server, merged_pairs
):
    """The several-digits head (model/gate.py): a photo of two digits whose inks touch is one glyph to
    segmentation; Predict says SEVERAL_DIGITS (on every RPC that takes an image), the same glyph sent as
    28x28 pixels is answered as a digit (the client framed one digit), and Read weighs its cuts by the
    head, so most such pairs come back as their two digits (before the head: read whole, as one digit)."""
    readings = []
    async with DigitsClient(digits_server.target, timeout=20) as client:
        for pair in merged_pairs:
            with pytest.raises(SeveralDigits):
                await client.predict_image(pair.photo)
            assert 0 <= (await client.predict_pixels(pair.pixels)).digit <= 9
            for call in (client.predict_batch, client.predict_stream):
                got = await call(pixels=[pair.pixels], images=[pair.photo])
                assert isinstance(got[1], SeveralDigits) and 0 <= got[0].digit <= 9, (call.__name__, got)
            readings.append((pair.text, (await client.read_image(pair.photo)).text))
    right = sum(text == read for text, read in readings)
    assert right >= 5, f"{right} of {len(readings)} touching pairs read right: {readings}"


async def test_a_correction_cuts_the_image_into_the_users_digits(digits_server, clear_digits, merged_pairs):
    """Read with `expected` (a user's reply with the right number): touching pairs that look like one glyph
    come back as the two pieces, left then right, whatever the plain reading was; a number read right is
    cut as the plain reading cut it; no cut gives a count far off (UNMATCHED_DIGITS); `expected` with a
    letter is BAD_FIELD."""
    async with DigitsClient(digits_server.target, timeout=20) as client:
        recounted = unmatched = 0
        for pair in merged_pairs:
            plain = await client.read_image(pair.photo)
            try:
                cut = await client.read_image(pair.photo, expected=pair.text)
            except InvalidInput as exc:  # a cut the model finds far-fetched (server/reading.RECOUNT_MARGIN)
                assert exc.reason == "UNMATCHED_DIGITS" and len(plain.digits) != 2, (pair.text, plain.text)
                unmatched += 1
                continue
            assert len(cut.digits) == 2, (pair.text, cut.text)
            (x0, y0, w0, h0), (x1, _, w1, _) = (d.box for d in cut.digits)
            assert x0 + w0 / 2 < x1 + w1 / 2 and all(len(d.pixels) == 784 for d in cut.digits)
            assert cut.digits[0].pixels != cut.digits[1].pixels
            recounted += len(plain.digits) != 2
        assert recounted >= 1, "no pair read with another count of digits was cut into its two digits"
        assert unmatched <= 2, f"{unmatched} of {len(merged_pairs)} pairs could not be cut into their two digits"

        _, data = number_scan(number(clear_digits, "2026"), np.random.default_rng(2))
        plain = await client.read_image(data)
        assert plain.text == "2026"
        cut = await client.read_image(data, expected="20 26\n")  # white space in `expected` is ignored
        assert [d.pixels for d in cut.digits] == [d.pixels for d in plain.digits]
        assert [d.box for d in cut.digits] == [d.box for d in plain.digits]

        with pytest.raises(InvalidInput) as raised:
            await client.read_image(data, expected="20262026202620262026")
        assert raised.value.reason == "UNMATCHED_DIGITS" and "20 digits" in str(raised.value)
        with pytest.raises(InvalidInput) as raised:
            await client.read_image(data, expected="2O26")
        assert raised.value.reason == "BAD_FIELD"


def test_digits_predict_prints_the_reading(digits_server, clear_digits, tmp_path):
    path = tmp_path / "number.png"
    _, data = number_scan(number(clear_digits, "907"), np.random.default_rng(2))
    path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "client.predict_cli", str(path), "--server", digits_server.target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: 907 (confidence ")


async def test_the_bots_answer_a_number_as_a_number(digits_server, clear_digits):
    """The shared bot core: Predict says SEVERAL_DIGITS, the core reads the number and replies with it."""
    from bots.answer import Outcome
    from bots.core import Recognizer
    from bots.replies import plain_text
    from bots.telegram_bot import format_html

    _, data = number_scan(number(clear_digits, "2026"), np.random.default_rng(0))
    async with DigitsClient(digits_server.target) as client:
        answer = await Recognizer(client).recognize(data)
    assert answer.outcome == Outcome.NUMBER and answer.number == "2026"
    assert plain_text(answer).startswith("2026, ") and plain_text(answer).split("\n")[0].endswith("% sure.")
    assert format_html(answer).startswith("<b>2026</b>, ")
