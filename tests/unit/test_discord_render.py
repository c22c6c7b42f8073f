"""The Discord-only pieces that need no network: the embed and the env config."""

from __future__ import annotations

import discord
import pytest

from bots.answer import Answer, Outcome
from bots.core import seen_png
from bots.discord_bot import (
    DEFAULT_API_BASE,
    DOWNLOAD_FAILED_TEXT,
    ConfigError,
    discord_config_from_env,
    render,
)
from bots.replies import LOW_CONFIDENCE_HINT, plain_text


def test_confident_answer_is_an_embed_with_the_seen_image():
    png = seen_png(bytes(range(256)) * 3 + bytes(16))
    kwargs = render(Answer(Outcome.DIGIT, digit=3, confidence=0.97, seen_png=png))
    embed: discord.Embed = kwargs["embed"]
    assert embed.title == "It's 3"
    assert [(f.name, f.value) for f in embed.fields] == [("Confidence", "97%")]
    assert embed.thumbnail.url == "attachment://seen.png" and embed.footer.text is None
    assert kwargs["file"].filename == "seen.png" and kwargs["file"].fp.read() == png


def test_unsure_answer_names_the_runner_up_and_gives_the_hint():
    unsure = Answer(Outcome.DIGIT, digit=4, confidence=0.55, runner_up=(9, 0.40), hint=LOW_CONFIDENCE_HINT)
    embed = render(unsure)["embed"]
    assert embed.title == "Probably 4"
    assert [(f.name, f.value) for f in embed.fields] == [("Confidence", "55%"), ("Runner-up", "9 (40%)")]
    assert embed.footer.text == LOW_CONFIDENCE_HINT


def test_a_number_is_an_embed_in_bold_with_the_boxed_photo():
    png = b"\x89PNG the annotated photo"
    answer = Answer(Outcome.NUMBER, confidence=0.94, number="2026", doubtful=((3, 2, 7),), seen_png=png)
    kwargs = render(answer)
    embed: discord.Embed = kwargs["embed"]
    assert embed.description == "**2026**, 94% sure.\nDigit 3 could be **2** or **7**."
    assert embed.description.replace("*", "") == plain_text(answer)  # the same wording, only the markup differs
    assert embed.thumbnail.url == "attachment://seen.png"
    assert kwargs["file"].filename == "seen.png" and kwargs["file"].fp.read() == png
    no_picture = render(Answer(Outcome.NUMBER, confidence=0.9, number="12 500"))
    assert no_picture["embed"].description == "**12 500**, 90% sure." and "file" not in no_picture


OTHERS = [o for o in Outcome if o not in (Outcome.DIGIT, Outcome.NUMBER, Outcome.DOWNLOAD_FAILED)]


@pytest.mark.parametrize("outcome", OTHERS)
def test_every_other_outcome_is_its_plain_text(outcome):
    answer = Answer(outcome, retry_after=12.4, limit_bytes=2 * 1024 * 1024)
    assert render(answer) == {"content": plain_text(answer)}


def test_download_failure_is_worded_for_discord():
    assert render(Answer(Outcome.DOWNLOAD_FAILED)) == {"content": DOWNLOAD_FAILED_TEXT}


def test_config_from_env_defaults_and_overrides():
    config = discord_config_from_env({"DISCORD_BOT_TOKEN": " abc "})
    assert (config.token, config.api_base, config.gateway_url, config.guild_id, config.message_content) == (
        "abc", DEFAULT_API_BASE, None, None, True)
    assert config.shard_count is None
    config = discord_config_from_env({
        "DISCORD_BOT_TOKEN": "abc", "DISCORD_API_BASE": "http://127.0.0.1:1/api/v10/",
        "DISCORD_GATEWAY_URL": "ws://127.0.0.1:1/gw", "DISCORD_GUILD_ID": "42", "DISCORD_MESSAGE_CONTENT": "0",
    })
    assert (config.api_base, config.gateway_url, config.guild_id, config.message_content) == (
        "http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/gw", 42, False)
    assert "abc" not in repr(config)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "DISCORD_BOT_TOKEN"),
        ({"DISCORD_BOT_TOKEN": "  "}, "DISCORD_BOT_TOKEN"),
        ({"DISCORD_BOT_TOKEN": "t", "DISCORD_GUILD_ID": "x"}, "DISCORD_GUILD_ID"),
        ({"DISCORD_BOT_TOKEN": "t", "DISCORD_MESSAGE_CONTENT": "maybe"}, "DISCORD_MESSAGE_CONTENT"),
        ({"DISCORD_BOT_TOKEN": "t", "DISCORD_API_BASE": "discord.com/api"}, "DISCORD_API_BASE"),
        ({"DISCORD_BOT_TOKEN": "t", "DISCORD_GATEWAY_URL": "https://gateway.discord.gg"}, "DISCORD_GATEWAY_URL"),
        ({"DISCORD_BOT_TOKEN": "t", "DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT"),
        ({"DISCORD_BOT_TOKEN": "t", "DISCORD_SHARD_COUNT": "two"}, "DISCORD_SHARD_COUNT"),
    ],
)
def test_config_errors(env, named):
    with pytest.raises(ConfigError) as info:
        discord_config_from_env(env)
    assert str(info.value).startswith(named) and "\n" not in str(info.value)


def test_shard_count():
    assert discord_config_from_env({"DISCORD_BOT_TOKEN": "t", "DISCORD_SHARD_COUNT": "3"}).shard_count == 3
