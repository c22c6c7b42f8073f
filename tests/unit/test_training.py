"""End to end: a tiny training run writes a checkpoint the evaluator loads and an offline wandb run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.checkpoint import load_checkpoint
from training.evaluate import evaluate
from training.evaluate import parse_args as eval_args
from training.train import parse_args, train

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--limit-train",
    "384",
    "--limit-eval",
    "256",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--dim",
    "32",
    "--depth",
    "1",
]


def _leveldb_log_records(raw: bytes):
    """The payloads of a .wandb file: a 7-byte ':W&B' header, then LevelDB log records in 32 KiB blocks
    (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last). wandb 0.31 ships no reader."""
    assert raw[:4] == b":W&B", "not a wandb run file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length = int.from_bytes(raw[pos + 4 : pos + 6], "little")
        kind = raw[pos + 6]
        chunk = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending


def _wandb_run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir):
    run_dir = tmp_path_factory.mktemp("tiny")
    os.environ["WANDB_MODE"] = "offline"
    summary = train(parse_args([*TINY, "--data-dir", str(mnist_dir), "--run-dir", str(run_dir), "--seed", "1"]))
    return run_dir, summary


def test_tiny_run_writes_a_loadable_checkpoint(tiny_run, mnist_dir):
    run_dir, summary = tiny_run
    ckpt = run_dir / "digits-encoder.safetensors"
    loaded = load_checkpoint(ckpt)
    assert loaded.config.dim == 32 and loaded.config.depth == 1
    assert loaded.version == summary["version"]
    assert 0.05 <= loaded.temperature <= 20
    result = evaluate(
        eval_args(
            [
                "--model",
                str(ckpt),
                "--data-dir",
                str(mnist_dir),
                "--limit",
                "256",
                "--throughput-seconds",
                "0.2",
                "--json",
            ]
        )
    )
    assert result["images"] == 256 and result["version"] == summary["version"]
    # the evaluator reproduces the test figures that training reported for the same images
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert result["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-4)
    assert sum(map(sum, result["confusion"])) == 256 and result["images_per_second"] > 0
    assert len(summary["history"]) == 1 and "val/accuracy" in summary["history"][0]


def test_offline_wandb_run_holds_the_logged_metrics(tiny_run, wandb_run_bytes):
    run_dir, summary = tiny_run
    raw = wandb_run_bytes(run_dir, b"test/ece", b"misclassified", b"digits-encoder")
    from wandb.proto import wandb_internal_pb2

    history_keys, summary_keys, artifacts = set(), set(), 0
    for data in _leveldb_log_records(raw):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history_keys |= {item.key or "/".join(item.nested_key) for item in rec.history.item}
        elif kind == "summary":
            summary_keys |= {item.key or "/".join(item.nested_key) for item in rec.summary.update}
        elif kind == "artifact":
            artifacts += 1
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= history_keys
    assert {"test/accuracy", "test/loss", "test/ece", "temperature"} <= summary_keys
    assert any("confusion_matrix" in k for k in history_keys | summary_keys)
    assert any("misclassified" in k for k in history_keys | summary_keys)
    assert artifacts >= 1


def test_same_seed_reproduces_the_same_weights(tiny_run, tmp_path, mnist_dir):
    run_dir, summary = tiny_run
    again = train(
        parse_args([*TINY, "--data-dir", str(mnist_dir), "--run-dir", str(tmp_path), "--seed", "1", "--no-wandb"])
    )
    assert again["version"] == summary["version"]  # the version is the weights' hash


def test_resume_continues_from_the_last_epoch(tmp_path, mnist_dir):
    base = [*TINY, "--data-dir", str(mnist_dir), "--run-dir", str(tmp_path), "--no-wandb"]
    train(parse_args(base))
    resumed = train(parse_args([*base[:5], "2", *base[6:], "--resume"]))
    assert [row["epoch"] for row in resumed["history"]] == [2]


def test_no_wandb_writes_no_run(tmp_path, mnist_dir):
    train(parse_args([*TINY, "--data-dir", str(mnist_dir), "--run-dir", str(tmp_path), "--no-wandb"]))
    assert not _wandb_run_files(tmp_path)
    assert (tmp_path / "digits-encoder.safetensors").is_file()


def test_torchrun_two_processes_on_cpu(tmp_path, mnist_dir):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.train",
        *TINY,
        "--data-dir",
        str(mnist_dir),
        "--run-dir",
        str(tmp_path),
        "--no-wandb",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    load_checkpoint(summary["checkpoint"])


def test_help_and_bad_data_dir_exit_cleanly(tmp_path):
    out = subprocess.run([sys.executable, "-m", "training.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--data-dir" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--data-dir", str(tmp_path), "--no-download"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and str(tmp_path) in bad.stderr and "Traceback" not in bad.stderr
