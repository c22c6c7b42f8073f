"""A real server with the shipped model, sent phone photos of letters, symbols and doodles it never
trained on (training/outliers.py, held-out fonts and hands): it refuses them or answers under 50%,
while a photo of a digit is still read, and read with confidence (issue 11, "not a digit")."""

from __future__ import annotations

import numpy as np

from client import DigitsClient, DigitsError
from testkit.photos import phone_photo
from training.outliers import KINDS, generate

REFUSED = {"NOT_A_DIGIT", "NO_DIGIT_FOUND", "SEVERAL_DIGITS"}


async def test_letters_symbols_and_doodles_are_not_confident_digits(digits_server, digit_samples):
    items = generate(40, "heldout", seed=11)
    assert {o.kind for o in items} == set(KINDS)
    unsure, confident = [], []
    async with DigitsClient(digits_server.target) as client:
        for o in items:
            try:
                p = await client.predict_image(phone_photo(o.image))
            except DigitsError as exc:
                assert exc.reason in REFUSED, exc
                unsure.append(o.text)
                continue
            (unsure if p.confidence < 0.5 else confident).append((o.kind, o.text, p.digit, round(p.confidence, 2)))
        # the same photos of digits: still digits, most of them sure
        digit_conf = []
        for d, samples in digit_samples.items():
            p = await client.predict_image(phone_photo(samples[0]))
            assert p.digit == d
            digit_conf.append(p.confidence)
    assert len(unsure) >= 36, f"answered >= 50% on {len(confident)} of 40 non-digits: {confident}"
    assert np.median(digit_conf) > 0.9
