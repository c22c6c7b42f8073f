"""The Discord-only pieces that need no network: the embed and the env config."""

from __future__ import annotations

import discord
import pytest

from bots.core import LOW_CONFIDENCE_HINT, Answer, Outcome, seen_png
from bots.discord_bot import (
    DEFAULT_API_BASE,
    ConfigError,
    discord_config_from_env,
    render,
)


def test_confident_answer_is_an_embed_with_the_seen_image():
    png = seen_png(bytes(range(256)) * 3 + bytes(16))
    kwargs = render(Answer(Outcome.DIGIT, "It's a 3 (97% sure).", 3, 0.97, None, png))
    embed: discord.Embed = kwargs["embed"]
    assert embed.title == "It's a 3"
    assert [(f.name, f.value) for f in embed.fields] == [("Confidence", "97%")]
    assert embed.thumbnail.url == "attachment://seen.png" and embed.footer.text is None
    assert kwargs["file"].filename == "seen.png" and kwargs["file"].fp.read() == png


def test_unsure_answer_names_the_runner_up_and_gives_the_hint():
    embed = render(Answer(Outcome.DIGIT, "...", 4, 0.55, (9, 0.40), None))["embed"]
    assert embed.title == "Probably a 4"
    assert [(f.name, f.value) for f in embed.fields] == [("Confidence", "55%"), ("Runner-up", "9 (40%)")]
    assert embed.footer.text == LOW_CONFIDENCE_HINT


@pytest.mark.parametrize("outcome", [o for o in Outcome if o != Outcome.DIGIT])
def test_every_other_outcome_is_its_plain_text(outcome):
    assert render(Answer(outcome, f"text for {outcome}")) == {"content": f"text for {outcome}"}


def test_config_from_env_defaults_and_overrides():
    config = discord_config_from_env({"DISCORD_BOT_TOKEN": " abc "})
    assert (config.token, config.api_base, config.gateway_url, config.guild_id, config.message_content) == (
        "abc", DEFAULT_API_BASE, None, None, True)
    config = discord_config_from_env({
        "DISCORD_BOT_TOKEN": "abc", "DISCORD_API_BASE": "http://127.0.0.1:1/api/v10/",
        "DISCORD_GATEWAY_URL": "ws://127.0.0.1:1/gw", "DISCORD_GUILD_ID": "42", "DISCORD_MESSAGE_CONTENT": "0",
    })
    assert (config.api_base, config.gateway_url, config.guild_id, config.message_content) == (
        "http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/gw", 42, False)
    assert "abc" not in repr(config)


@pytest.mark.parametrize("env", [{}, {"DISCORD_BOT_TOKEN": "  "}, {"DISCORD_BOT_TOKEN": "t", "DISCORD_GUILD_ID": "x"}])
def test_config_errors(env):
    with pytest.raises(ConfigError):
        discord_config_from_env(env)
