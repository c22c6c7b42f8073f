"""The commands as users run them: `digits-run` (server + Telegram bot) and `digits-telegram`, as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.fake_telegram import FakeTelegram
from testkit.photos import phone_photo
from testkit.server_process import free_port

BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any real bot tokens, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")}
    return {**env, **extra}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("command", ["digits-run", "digits-telegram"])
def test_help(command):
    result = subprocess.run([BIN / command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_missing_token_is_a_clear_error(tmp_path):
    result = subprocess.run([BIN / "digits-telegram"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=clean_env())
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN is not set" in result.stderr and "Traceback" not in result.stderr


def test_token_from_dotenv_and_rejected_token(tmp_path):
    """A token in .env is picked up; Telegram refusing it is a clear error too (exit 2, no traceback)."""
    with FakeTelegram() as fake:
        (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN=999:wrong-token\nTELEGRAM_API_URL={fake.root}\n")
        result = subprocess.run([BIN / "digits-telegram"], capture_output=True, text=True, timeout=60,
                                cwd=tmp_path, env=clean_env())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "rejected TELEGRAM_BOT_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert "wrong-token" not in result.stderr + result.stdout


def test_digits_run_serves_a_photo_and_stops_everything_on_ctrl_c(tmp_path, digit_samples):
    log_path = tmp_path / "digits-run.log"
    with FakeTelegram() as fake, log_path.open("w") as log:
        env = clean_env(TELEGRAM_BOT_TOKEN=fake.token, TELEGRAM_API_URL=fake.root, LOG_LEVEL="DEBUG")
        port = free_port()
        run = subprocess.Popen([BIN / "digits-run", "--port", str(port), "--metrics-port", "0"],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "started the telegram bot" not in log_path.read_text():
                assert run.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
            _, mid = fake.photo(phone_photo(digit_samples[0][0]), chat_id=77, user_id=77)
            deadline = time.monotonic() + 60
            while not [c for c in fake.sent("sendMessage") if c.reply_to == mid]:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
            reply = [c for c in fake.sent("sendMessage") if c.reply_to == mid][0]
            assert "sure)" in reply.params["text"]
            store = (tmp_path / "digits-feedback.sqlite3").resolve()  # corrections kept by default, and said where
            assert store.is_file() and f"kept in {store}" in log_path.read_text()
        finally:
            run.send_signal(signal.SIGINT)
            code = run.wait(60)
    output = log_path.read_text()
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
    assert code == 0, output[-3000:]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)
    assert "server stopped (exit code 0)" in output and "telegram bot stopped" in output
    assert "discord bot not started: set DISCORD_BOT_TOKEN" in output
    assert fake.token not in output


def test_webhook_mode(tmp_path, digits_server, digit_samples):
    """`--webhook-url`: the bot registers the webhook with its secret and answers updates POSTed to it."""
    import json
    import urllib.error
    import urllib.request

    port = free_port()
    with FakeTelegram() as fake:
        fake.hold_updates = True
        env = clean_env(TELEGRAM_BOT_TOKEN=fake.token, TELEGRAM_API_URL=fake.root, DIGITS_SERVER=digits_server.target,
                        TELEGRAM_WEBHOOK_SECRET="hook-secret-42")
        url = f"http://127.0.0.1:{port}/telegram"
        bot = subprocess.Popen([BIN / "digits-telegram", "--webhook-url", url, "--listen", "127.0.0.1",
                                "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while fake.webhook_url != url:
                assert bot.poll() is None and time.monotonic() < deadline, "bot did not register its webhook"
                time.sleep(0.1)
            assert fake.webhook_secret == "hook-secret-42"
            _, mid = fake.photo(phone_photo(digit_samples[9][0]), chat_id=88, user_id=88)
            body = json.dumps(fake.held[-1]).encode()

            def post(secret: str) -> int:
                request = urllib.request.Request(url, data=body, method="POST", headers={
                    "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret})
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return response.status
                except urllib.error.HTTPError as exc:
                    return exc.code

            while True:  # the listener may come up just after setWebhook
                try:
                    assert post("wrong") == 403
                    break
                except urllib.error.URLError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert post("hook-secret-42") == 200
            reply = fake.wait_for_sync("sendMessage", reply_to=mid, timeout=30)
            assert "sure)" in reply.params["text"]
            assert len([c for c in fake.sent("sendMessage") if c.reply_to == mid]) == 1  # the forged post did nothing
        finally:
            bot.send_signal(signal.SIGINT)
            output = bot.communicate(timeout=30)[0]
    assert bot.returncode == 0, output[-3000:]
    assert fake.token not in output and "hook-secret-42" not in output


def test_supervisor_restarts_a_crashing_bot_with_backoff_but_not_a_misconfigured_one(capsys):
    """launcher.launch.supervise with real child processes: a crash is reported and retried after 1 s, 2 s, ...;
    exit code 2 (configuration error) is reported once and left alone."""
    from launcher.launch import Child, supervise

    py = sys.executable
    server = Child("digits server", [py, "-c", "import time; time.sleep(60)"], dict(os.environ))
    crashing = Child("crashy bot", [py, "-c", "import sys; sys.exit(3)"], dict(os.environ))
    misconfigured = Child("tokenless bot", [py, "-c", "import sys; sys.exit(2)"], dict(os.environ))
    for child in (server, crashing, misconfigured):
        child.start()
    t0 = time.monotonic()
    try:
        supervise(server, [crashing, misconfigured], lambda: time.monotonic() - t0 > 6.0, restart=True)
    finally:
        for child in (server, crashing, misconfigured):
            child.stop()
    out = capsys.readouterr().out
    assert out.count("the crashy bot exited unexpectedly with code 3") == 3  # at ~0 s, ~1 s, ~3 s
    assert "restarting in 1 s" in out and "restarting in 2 s" in out and "restarting in 4 s" in out
    assert out.count("restarted the crashy bot") == 2
    assert out.count("the tokenless bot exited with code 2; not restarting it") == 1
    assert "digits server exited" not in out


def one_line_error(result: subprocess.CompletedProcess, named: str) -> str:
    """The process exited 2 with exactly one line on stderr that names the setting; returns that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"DIGITS_RATE_LIMIT": "0"}, [], "DIGITS_RATE_LIMIT"),
        ({"DIGITS_RATE_LIMIT": "-1"}, [], "DIGITS_RATE_LIMIT"),
        ({"DIGITS_RATE_LIMIT": "abc"}, [], "DIGITS_RATE_LIMIT"),
        ({"DIGITS_RATE_WINDOW": "0"}, [], "DIGITS_RATE_WINDOW"),
        ({"DIGITS_MAX_BYTES": "10MB"}, [], "DIGITS_MAX_BYTES"),
        ({"DIGITS_LOW_CONFIDENCE": "80"}, [], "DIGITS_LOW_CONFIDENCE"),
        ({"DIGITS_TIMEOUT": "never"}, [], "DIGITS_TIMEOUT"),
        ({"DIGITS_REDIS_URL": "localhost"}, [], "DIGITS_REDIS_URL"),
        ({"LOG_LEVEL": "LOUD"}, [], "LOG_LEVEL"),
        ({"TELEGRAM_API_URL": "api.telegram.org"}, [], "TELEGRAM_API_URL"),
        ({"TELEGRAM_BOT_TOKEN": "not a token"}, [], "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_WEBHOOK_SECRET": "has spaces!"}, [], "TELEGRAM_WEBHOOK_SECRET"),
        ({}, ["--port", "70000"], "--port"),
        ({}, ["--log-level", "chatty"], "--log-level"),
        ({}, ["--webhook-url", "example.com/hook"], "--webhook-url"),
        ({}, ["--webhook-url", "http://example.com/hook"], "--webhook-url"),  # Telegram itself wants HTTPS
        ({}, ["--webhook-url", "https://example.com/hook", "--url-path", "a b"], "--url-path"),
    ],
)
def test_bad_setting_exits_2_with_one_line(tmp_path, env, args, named):
    env = clean_env(**{"TELEGRAM_BOT_TOKEN": "123:abc", **env})
    result = subprocess.run([BIN / "digits-telegram", *args], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=env)
    line = one_line_error(result, named)
    assert line.startswith("digits-telegram: error:") and "123:abc" not in line


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"TELEGRAM_BOT_TOKEN": "123:abc", "DIGITS_RATE_LIMIT": "abc"}, [], "DIGITS_RATE_LIMIT"),
        ({"TELEGRAM_BOT_TOKEN": "123:abc", "TELEGRAM_WEBHOOK_SECRET": "not ok"}, [], "TELEGRAM_WEBHOOK_SECRET"),
        ({"DISCORD_BOT_TOKEN": "abc", "DISCORD_SHARD_COUNT": "0"}, [], "DISCORD_SHARD_COUNT"),
        ({}, ["--port", "http"], "--port"),
        ({}, ["--metrics-port", "-1"], "--metrics-port"),
        ({}, ["--startup-timeout", "0"], "--startup-timeout"),
        ({}, ["--model", "missing.safetensors"], "--model"),
    ],
)
def test_digits_run_checks_every_setting_before_starting_anything(tmp_path, env, args, named):
    """A bad setting stops digits-run at once (exit 2, one line): no server is started, no bot restarted forever."""
    started = time.monotonic()
    result = subprocess.run([BIN / "digits-run", "--port", str(free_port()), *args], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=clean_env(**env))
    one_line_error(result, named)
    assert "starting the digits server" not in result.stdout and time.monotonic() - started < 30


def test_digits_run_does_not_restart_a_bot_that_exits_with_a_config_error(tmp_path):
    """A token Telegram rejects passes the start-up checks; the bot then exits 2, and digits-run says so once
    and keeps serving instead of restarting it forever."""
    log_path = tmp_path / "digits-run.log"
    with FakeTelegram() as fake, log_path.open("w") as log:
        env = clean_env(TELEGRAM_BOT_TOKEN="999:rejected-token", TELEGRAM_API_URL=fake.root)
        run = subprocess.Popen([BIN / "digits-run", "--port", str(free_port()), "--metrics-port", "0"],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "not restarting it" not in log_path.read_text():
                assert run.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(3.0)  # a restart (backoff 1 s) would show up in this time
            assert run.poll() is None, "digits-run must keep the server running"
        finally:
            run.send_signal(signal.SIGINT)
            code = run.wait(60)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert output.count("the telegram bot exited with code 2; not restarting it") == 1
    assert "restarted the telegram bot" not in output and "configuration error" in output
    assert "rejected TELEGRAM_BOT_TOKEN" in output and "rejected-token" not in output
