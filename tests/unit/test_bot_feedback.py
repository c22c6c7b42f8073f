"""The bots' correction pieces that need no server: pseudonyms, the secret, button ids, pending answers."""

from __future__ import annotations

import stat

import pytest

from bots.chatstate import MemoryChatState
from bots.config import ConfigError
from bots.feedback import (
    NUMBER_REPLY,
    PendingStore,
    button_id,
    feedback_config_from_env,
    join_tokens,
    load_secret,
    new_token,
    parse_button_id,
    pseudonym,
    split_tokens,
)


def test_pseudonyms_are_keyed_stable_and_never_the_id():
    a = pseudonym(b"k" * 32, "telegram", 123456789)
    assert a == pseudonym(b"k" * 32, "telegram", "123456789")
    assert a != pseudonym(b"k" * 32, "discord", 123456789)  # one person on two platforms: two ids
    assert a != pseudonym(b"j" * 32, "telegram", 123456789)  # another secret, another id
    assert "123456789" not in a and a.startswith("u-") and not a.isdigit()


def test_secret_from_env_or_generated_once_and_kept_private(tmp_path):
    path = tmp_path / "secret"
    with pytest.raises(ConfigError):
        load_secret({"DIGITS_FEEDBACK_SECRET": "short"}, path)
    assert load_secret({"DIGITS_FEEDBACK_SECRET": "x" * 20}, path) == b"x" * 20 and not path.exists()
    first = load_secret({}, path)
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret({}, path) == first  # the next run finds the same one


def test_button_ids_fit_telegram_and_parse_back():
    token = "0123456789abcdef"
    for choice in ("ok", "no", "x", *map(str, range(10))):
        value = button_id(token, choice)
        assert len(value.encode()) <= 64 and parse_button_id(value) == (token, choice)
    for bad in ("fb:0123:ok", "fb:0123456789abcdef:10", "xx:0123456789abcdef:ok", ""):
        assert parse_button_id(bad) is None


def test_pending_answers_are_claimed_once_and_forgotten(tmp_path):
    store = PendingStore(tmp_path / "pending.sqlite3")
    token = store.add("u-a", b"\x01" * 784, 3, "v1", "telegram")
    assert store.get(token).predicted == 3 and store.get(token).label is None
    assert store.claim(token, 5) and not store.claim(token, 6)
    assert store.get(token).label == 5
    store.release(token)
    assert store.claim(token, 6)
    store.close()
    reopened = PendingStore(tmp_path / "pending.sqlite3")  # a restart keeps them
    assert reopened.get(token).label == 6
    assert reopened.forget("u-a") == 1 and reopened.get(token) is None


def test_feedback_switch():
    assert feedback_config_from_env({}).enabled
    assert not feedback_config_from_env({"DIGITS_FEEDBACK": "off"}).enabled
    with pytest.raises(ConfigError):
        feedback_config_from_env({"DIGITS_FEEDBACK": "maybe"})


async def test_memory_chat_state_keeps_texts_for_a_while_and_bounded():
    now = [0.0]
    state = MemoryChatState(clock=lambda: now[0], max_keys=2)
    await state.set_text("a", "1", 10)
    assert await state.get_text("a") == "1" and await state.get_text("b") is None
    now[0] = 10.0
    assert await state.get_text("a") is None  # expired
    for key in "bcd":
        await state.set_text(key, key, 10)
    assert [await state.get_text(k) for k in "bcd"] == [None, "c", "d"]  # the oldest went first


def test_number_tokens_round_trip_and_junk_is_refused():
    tokens = [new_token() for _ in range(3)]
    assert split_tokens(join_tokens(tokens)) == tokens
    assert split_tokens(None) == [] and split_tokens("") == [] and split_tokens("x,y") == []
    assert NUMBER_REPLY.fullmatch(" 20 26\n") and not NUMBER_REPLY.fullmatch("2O26") and not NUMBER_REPLY.fullmatch("")
