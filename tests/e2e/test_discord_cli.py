"""`digits-discord` as a deployment runs it: a subprocess configured only by its environment."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from testkit.fake_discord import FakeDiscord
from testkit.photos import phone_photo

TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.cli-secret-token.must-not-appear"
COMMAND = [sys.executable, "-m", "bots.discord_bot"]


def bot_env(tmp_path, **extra: str) -> dict[str, str]:
    """The parent's env minus anything DISCORD_*/DIGITS_*, run from an empty dir so no .env is picked up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "DIGITS_"))}
    env.update(extra)
    return env


async def run(args: list[str], env: dict[str, str], cwd, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*COMMAND, *args, env=env, cwd=cwd,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_help_names_the_settings(tmp_path):
    rc, out, _ = await run(["--help"], bot_env(tmp_path), tmp_path)
    assert rc == 0
    for name in ("DISCORD_BOT_TOKEN", "DIGITS_SERVER", "DISCORD_GUILD_ID", "DISCORD_API_BASE", "DISCORD_GATEWAY_URL"):
        assert name in out


async def test_missing_token_is_a_clear_error(tmp_path):
    rc, out, err = await run([], bot_env(tmp_path), tmp_path)
    assert rc == 2
    assert "DISCORD_BOT_TOKEN is not set" in err
    assert "Traceback" not in err + out


async def test_rejected_token_exits_2_without_leaking_it(tmp_path):
    fake = await FakeDiscord(TOKEN).start()
    try:
        wrong = "MTA5.wrong-token.also-secret"
        env = bot_env(tmp_path, DISCORD_BOT_TOKEN=wrong, DISCORD_API_BASE=fake.api_base, LOG_LEVEL="DEBUG")
        rc, out, err = await run([], env, tmp_path)
    finally:
        await fake.stop()
    assert rc == 2, err[-2000:]
    assert "rejected DISCORD_BOT_TOKEN" in err
    assert wrong not in err + out and "Traceback" not in err


async def test_serves_from_env_and_stops_on_sigterm(tmp_path, digits_server, digit_samples):
    """Env-only config (as `digits-run` starts it), a real answer, a clean SIGTERM, and no token in DEBUG logs."""
    fake = await FakeDiscord(TOKEN).start()
    env = bot_env(tmp_path, DISCORD_BOT_TOKEN=TOKEN, DISCORD_API_BASE=fake.api_base,
                  DISCORD_GUILD_ID=str(fake.guild_id), DIGITS_SERVER=digits_server.target, LOG_LEVEL="DEBUG")
    proc = await asyncio.create_subprocess_exec(*COMMAND, env=env, cwd=tmp_path,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await fake.wait_ready(timeout=60)
        assert set(fake.synced_commands) == {str(fake.guild_id)}
        token = await fake.invoke_slash("digit", fake.attachment(phone_photo(digit_samples[7][0])))
        reply = await fake.final_reply(token, timeout=30)
        assert reply.embeds and reply.embeds[0]["title"][-1].isdigit() and "seen.png" in reply.files
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.stop()
    logs = out.decode() + err.decode()
    assert proc.returncode == 0, logs[-3000:]
    assert f"synced 4 commands to guild {fake.guild_id}" in logs and "shutting down" in logs
    assert "DEBUG" in logs  # the check below is meaningful only if verbose logging was on
    assert TOKEN not in logs
    assert "Traceback" not in logs


@pytest.mark.parametrize("guild", ["abc", "12x"])
async def test_bad_guild_id_is_a_clear_error(tmp_path, guild):
    rc, _, err = await run([], bot_env(tmp_path, DISCORD_BOT_TOKEN=TOKEN, DISCORD_GUILD_ID=guild), tmp_path)
    assert rc == 2 and "DISCORD_GUILD_ID" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"DIGITS_RATE_LIMIT": "0"}, [], "DIGITS_RATE_LIMIT"),
        ({"DIGITS_RATE_LIMIT": "abc"}, [], "DIGITS_RATE_LIMIT"),
        ({"DISCORD_SHARD_COUNT": "many"}, [], "DISCORD_SHARD_COUNT"),
        ({"DISCORD_MESSAGE_CONTENT": "perhaps"}, [], "DISCORD_MESSAGE_CONTENT"),
        ({"DISCORD_GATEWAY_URL": "gateway.discord.gg"}, [], "DISCORD_GATEWAY_URL"),
        ({"LOG_LEVEL": "LOUD"}, [], "LOG_LEVEL"),
        ({}, ["--guild-id", "abc"], "--guild-id"),
        ({}, ["--log-level", "chatty"], "--log-level"),
    ],
)
async def test_bad_setting_exits_2_with_one_line(tmp_path, env, args, named):
    rc, out, err = await run(args, bot_env(tmp_path, DISCORD_BOT_TOKEN=TOKEN, **env), tmp_path)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and named in lines[0], err[-2000:]
    assert lines[0].startswith("digits-discord: error:") and TOKEN not in err + out and "Traceback" not in err
