"""Several server replicas behind one client target: calls spread round-robin, and a replica that
goes away (SIGKILL, or SIGTERM's drain) costs no failed call. Real servers on loopback."""

from __future__ import annotations

import asyncio
import signal

import pytest

from bots.core import CoreConfig, make_client
from client import DigitsClient, ServerUnavailable, predict_cli
from testkit.metrics import calls_served
from testkit.photos import phone_photo
from testkit.server_process import ServerProcess


def list_target(*servers: ServerProcess) -> str:
    """gRPC's static-list form: `ipv4:127.0.0.1:P1,127.0.0.1:P2`."""
    return "ipv4:" + ",".join(s.target for s in servers)


@pytest.fixture(scope="module")
def pair(shipped_model_path):
    servers = [ServerProcess(shipped_model_path, ["--workers", "1"]) for _ in range(2)]
    for s in servers:
        s.start(wait=False)
    for s in servers:
        s.wait_serving()
    yield servers
    for s in servers:
        s.close()


async def test_calls_go_round_robin_over_the_listed_replicas(pair, mnist_test):
    """Through the bots' own client factory (DIGITS_SERVER), so the bots balance the same way."""
    before = [calls_served(s.metrics_url) for s in pair]
    client = make_client(CoreConfig(digits_server=list_target(*pair)))
    images = [img.tobytes() for img in mnist_test.images[:100].numpy()]
    try:
        for image in images:  # one at a time: round-robin alternates strictly between READY replicas
            assert (await client.predict_pixels(image)).pixels == image
    finally:
        await client.close()
    served = [calls_served(s.metrics_url) - b for s, b in zip(pair, before, strict=True)]
    assert sum(served) == 100, served
    assert min(served) >= 40, f"calls not spread over both replicas: {served}"


async def test_a_dns_target_reaches_the_server(pair):
    async with DigitsClient(f"dns:///localhost:{pair[0].port}") as client:
        assert await client.ping()


def test_digits_predict_takes_a_list_of_replicas(pair, digit_samples, tmp_path, capsys):
    files = []
    for digit in range(10):  # enough calls per run that both replicas are connected while it runs
        path = tmp_path / f"{digit}.jpg"
        path.write_bytes(phone_photo(digit_samples[digit][0]))
        files.append(str(path))
    def calls(server: ServerProcess) -> int:  # digits-predict reads (Read), streams or batches, by version
        return sum(calls_served(server.metrics_url, m) for m in ("Read", "PredictStream", "PredictBatch"))

    before = [calls(s) for s in pair]
    # Each run is a new channel; its first calls may all go to the replica that connected first, the
    # later ones are spread round-robin over both.
    for _ in range(2):
        assert predict_cli.main([*files, "--server", list_target(*pair)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 and all(": " in line for line in lines), lines
    served = [calls(s) - b for s, b in zip(pair, before, strict=True)]
    assert sum(served) >= 2 and min(served) > 0, f"every run reached a replica, and both were used: {served}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_a_replica_that_goes_away_costs_no_failed_call(shipped_model_path, mnist_test, sig):
    """16 clients keep calling while one replica is killed (or drains): every call gets its answer,
    the survivor takes over, and the dead one had served its share before it went."""
    servers = [ServerProcess(shipped_model_path, ["--workers", "1"]) for _ in range(2)]
    for s in servers:
        s.start(wait=False)
    try:
        for s in servers:
            s.wait_serving()
        survivor, victim = servers
        images = [img.tobytes() for img in mnist_test.images[:64].numpy()]
        answered: list[int] = []
        failed: list[Exception] = []
        stop = asyncio.Event()

        async def user(client: DigitsClient, k: int) -> None:
            i = k
            while not stop.is_set():
                image = images[i % len(images)]
                try:
                    assert (await client.predict_pixels(image)).pixels == image
                    answered.append(i)
                except ServerUnavailable as exc:
                    failed.append(exc)
                i += 1

        async with DigitsClient(list_target(*servers), timeout=10) as client:
            users = [asyncio.create_task(user(client, k)) for k in range(16)]
            await asyncio.sleep(1.5)
            victim_served = calls_served(victim.metrics_url)
            (victim.process.kill() if sig == signal.SIGKILL else victim.signal(sig))
            await asyncio.to_thread(victim.process.wait, 30)
            at_kill = len(answered)
            survivor_before = calls_served(survivor.metrics_url)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*users)
        assert not failed, f"{len(failed)} failed calls, first: {failed[0]!r}"
        assert victim_served > 0, "the victim never got calls: nothing was tested"
        assert len(answered) > at_kill + 20, "the load did not go on after the replica went away"
        assert calls_served(survivor.metrics_url) - survivor_before >= len(answered) - at_kill - 16
        if sig == signal.SIGTERM:
            assert victim.process.returncode == 0, victim.log()
    finally:
        for s in servers:
            s.close()


async def test_connections_closed_by_max_connection_age_cost_no_call(shipped_model_path, mnist_test):
    """--max-connection-age makes DNS clients reconnect (and so look the name up again): the calls
    in flight when the server closes a connection still get their answers."""
    images = [img.tobytes() for img in mnist_test.images[:32].numpy()]
    with ServerProcess(shipped_model_path, ["--workers", "1", "--max-connection-age", "0.5"]) as server:
        answered, failed = 0, []
        async with DigitsClient(f"dns:///localhost:{server.port}", timeout=10) as client:
            deadline = asyncio.get_running_loop().time() + 4.0

            async def user(k: int) -> None:
                nonlocal answered
                while asyncio.get_running_loop().time() < deadline:
                    try:
                        await client.predict_pixels(images[k])
                        answered += 1
                    except ServerUnavailable as exc:
                        failed.append(exc)

            await asyncio.gather(*(user(k) for k in range(8)))
        assert not failed, f"{len(failed)} failed calls, first: {failed[0]!r}"
        assert answered > 100
        assert "Traceback" not in server.log()
