"""Model updates with no downtime (server/model_reload.py), against real servers: a replaced --model
file and SIGHUP switch models under load with no failed call, a bad file is refused while the old
model keeps serving, and a crashed model process comes back as the model it was, not as the file on
disk by then."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from client import DigitsClient, DigitsError
from model.checkpoint import load_checkpoint, save_checkpoint
from model.encoder import DigitEncoder, EncoderConfig
from testkit.metrics import labels_of, sample, scrape
from testkit.server_process import ServerProcess


@pytest.fixture(scope="module")
def checkpoints(shipped_model_path, tmp_path_factory) -> dict[str, Path]:
    """v1 (the shipped model), v2 (the same weights under another version), and bad files."""
    folder = tmp_path_factory.mktemp("checkpoints")
    loaded = load_checkpoint(shipped_model_path)
    files = {"v1": folder / "v1.safetensors", "v2": folder / "v2.safetensors"}
    shutil.copy(shipped_model_path, files["v1"])
    save_checkpoint(files["v2"], loaded.model, loaded.temperature, version="reload-test-v2")
    files["corrupt"] = folder / "corrupt.safetensors"
    files["corrupt"].write_bytes(b"not a checkpoint at all")
    data = bytearray(shipped_model_path.read_bytes())
    data[-100] ^= 0xFF  # one weight changed: the checksum no longer matches
    files["tampered"] = folder / "tampered.safetensors"
    files["tampered"].write_bytes(bytes(data))
    files["wrong_shape"] = folder / "wrong_shape.safetensors"  # a valid checkpoint of a 5-class model
    save_checkpoint(files["wrong_shape"], DigitEncoder(EncoderConfig(num_classes=5, depth=1, dim=32, heads=1)))
    return files


def version_of(path: Path) -> str:
    return load_checkpoint(path).version


def replace_atomically(source: Path, target: Path) -> None:
    """What `mv`, `kubectl cp` + `mv` and a volume update do: the new file appears whole, under the old name."""
    staging = target.with_name(target.name + ".incoming")
    shutil.copy(source, staging)
    os.replace(staging, target)


def served_version(server: ServerProcess) -> str:
    (info,) = labels_of(scrape(server.metrics_url), "digits_model_info")
    return info["version"]


def reloads(server: ServerProcess, outcome: str) -> int:
    return int(sample(scrape(server.metrics_url), "digits_model_reloads_total", outcome=outcome))


def model_pids(server: ServerProcess) -> list[int]:
    pids = re.findall(r"model_pid=(\d+)", server.log())
    return [int(p) for p in pids]


class Load:
    """`users` clients calling Predict in a loop; records each answer's model version, and failures."""

    def __init__(self, client: DigitsClient, images: list[bytes], users: int = 16) -> None:
        self.client, self.images = client, images
        self.versions: list[str] = []
        self.failures: list[DigitsError] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._user(k)) for k in range(users)]

    async def _user(self, k: int) -> None:
        i = k
        while not self._stop.is_set():
            image = self.images[i % len(self.images)]
            try:
                p = await self.client.predict_pixels(image)
                assert p.pixels == image
                self.versions.append(p.model_version)
            except DigitsError as exc:
                self.failures.append(exc)
            i += 1

    async def until(self, version: str, timeout: float = 60.0) -> None:
        """Wait until `version` answers (the switch happened)."""
        deadline = time.monotonic() + timeout
        while version not in self.versions[-16:]:
            assert time.monotonic() < deadline, f"{version} never answered; last: {self.versions[-3:]}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_replaced_file_is_switched_in_under_load_and_bad_files_are_refused(checkpoints, mnist_test, tmp_path):
    model = tmp_path / "model.safetensors"
    shutil.copy(checkpoints["v1"], model)
    v1, v2 = version_of(checkpoints["v1"]), version_of(checkpoints["v2"])
    images = [img.tobytes() for img in mnist_test.images[:64].numpy()]
    with ServerProcess(model, ["--workers", "1", "--reload-poll", "0.2"]) as server:
        async with DigitsClient(server.target, timeout=10) as client:
            load = Load(client, images)
            await load.until(v1)
            replace_atomically(checkpoints["v2"], model)
            await load.until(v2)
            switched_at = len(load.versions)
            await asyncio.sleep(1.0)
            assert set(load.versions[switched_at + 16 :]) == {v2}, "after the switch only the new model answers"
            assert served_version(server) == v2 and await client.ping() == v2

            # Bad files: each refused with one log line and a metric; v2 keeps answering throughout.
            for n, bad in enumerate(("corrupt", "tampered", "wrong_shape"), start=1):
                replace_atomically(checkpoints[bad], model)
                await wait_for(lambda n=n: reloads(server, "refused") == n, what=f"{bad} refused")
            await asyncio.sleep(0.5)  # a refused file is refused once, not at every poll
            await load.stop()
        assert not load.failures, f"{len(load.failures)} failed calls, first: {load.failures[0]!r}"
        assert set(load.versions) == {v1, v2}
        assert served_version(server) == v2
        assert reloads(server, "refused") == 3 and reloads(server, "switched") == 1
        refused = [line for line in server.log().splitlines() if "model refused" in line]
        assert len(refused) == 3, refused
        assert "weights do not match their checksum" in refused[1] and str(model) in refused[1]
        assert "not 10" in refused[2] or "do not fit 10 classes" in refused[2], refused[2]
        assert "Traceback" not in server.log()
        # The model processes of v1 and of each refused file are gone; only v2's is left.
        pids = model_pids(server)
        assert len(pids) >= 2
        for pid in pids[:-1]:
            await wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"model process {pid} to exit")


async def test_sighup_reloads_and_a_crashed_model_comes_back_as_the_model_it_was(checkpoints, mnist_test, tmp_path):
    model = tmp_path / "model.safetensors"
    shutil.copy(checkpoints["v1"], model)
    v1, v2 = version_of(checkpoints["v1"]), version_of(checkpoints["v2"])
    image = mnist_test.images[0].numpy().tobytes()
    with ServerProcess(model, ["--workers", "1", "--reload-poll", "0"]) as server:
        async with DigitsClient(server.target, timeout=60) as client:  # a restart loads torch afresh: seconds
            first = await client.predict_pixels(image)
            assert first.model_version == v1
            replace_atomically(checkpoints["v2"], model)  # on disk, not yet loaded: polling is off

            # The model process crashes: it comes back as v1 (the pinned copy), not as the file on disk.
            os.kill(model_pids(server)[-1], signal.SIGKILL)
            again = [await client.predict_pixels(image) for _ in range(3)]
            assert "model process restarted" in server.log(), server.log()[-2000:]
            assert {p.model_version for p in again} == {v1}
            assert again[-1].probabilities == first.probabilities
            assert served_version(server) == v1 and await client.ping() == v1

            # SIGHUP: now v2, under load.
            load = Load(client, [image] * 8)
            await load.until(v1)
            server.signal(signal.SIGHUP)
            await load.until(v2)
            await asyncio.sleep(0.5)
            await load.stop()
            assert not load.failures, f"{len(load.failures)} failed calls, first: {load.failures[0]!r}"
            assert served_version(server) == v2 and await client.ping() == v2

            # SIGHUP with nothing new: nothing happens.
            server.signal(signal.SIGHUP)
            await wait_for(lambda: reloads(server, "unchanged") == 1, what="the unchanged reload")
            assert (await client.predict_pixels(image)).model_version == v2
        assert server.running and "Traceback" not in server.log()
        assert reloads(server, "switched") == 1 and reloads(server, "refused") == 0
