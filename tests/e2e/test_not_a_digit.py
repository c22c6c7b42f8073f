"""A real server answers NOT_A_DIGIT for letters, symbols and doodles its model's gate refuses, on
every RPC that classifies (Predict, PredictBatch, PredictStream, Read), and keeps answering digits."""

from __future__ import annotations

import grpc
import pytest

from client import DigitsClient, NotADigit, Prediction
from testkit.not_digits import refused_photos
from testkit.photos import phone_photo


@pytest.fixture(scope="module")
def letters(shipped_model_path):
    return refused_photos(shipped_model_path)


async def test_predict_says_not_a_digit(digits_server, letters):
    async with DigitsClient(digits_server.target, timeout=20) as client:
        for letter in letters:
            with pytest.raises(NotADigit) as info:
                await client.predict_image(letter.photo)
            assert info.value.reason == "NOT_A_DIGIT" and info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "doesn't look like a digit" in info.value.message, letter.text
            with pytest.raises(NotADigit):
                await client.predict_pixels(letter.pixels)


async def test_batch_and_stream_refuse_the_item_and_answer_the_others(digits_server, letters, digit_samples):
    digit = phone_photo(digit_samples[3][0])
    async with DigitsClient(digits_server.target, timeout=20) as client:
        for call in (client.predict_batch, client.predict_stream):
            got = await call(pixels=[letters[0].pixels], images=[digit, letters[1].photo])
            assert isinstance(got[0], NotADigit) and isinstance(got[2], NotADigit), (call.__name__, got)
            assert isinstance(got[1], Prediction) and got[1].digit == 3, (call.__name__, got)


async def test_read_says_not_a_digit(digits_server, letters):
    async with DigitsClient(digits_server.target, timeout=20) as client:
        for letter in letters:
            with pytest.raises(NotADigit):
                await client.read_image(letter.photo)


async def test_digits_are_still_digits(digits_server, digit_samples):
    async with DigitsClient(digits_server.target, timeout=20) as client:
        for d in (0, 1, 7):
            assert (await client.predict_image(phone_photo(digit_samples[d][0]))).digit == d
