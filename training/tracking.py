"""Weights & Biases logging, kept apart so training reads as training.

Works with no account: with no API key the run is written offline (sync it later with
`wandb sync`), and `--no-wandb` (or WANDB_MODE=disabled) turns it off entirely.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

import torch

MAX_MISCLASSIFIED = 200


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def choose_mode(disabled: bool) -> str:
    if disabled:
        return "disabled"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_credentials() else "offline"


def start(args: Any, cfg: Any, run_dir: Path, params: int, disabled: bool) -> Any:
    mode = choose_mode(disabled)
    if mode == "disabled":
        return None
    import wandb

    config = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": cfg.to_dict(),
        "parameters": params,
    }
    run = wandb.init(
        project=args.wandb_project,
        name=args.wandb_name,
        dir=str(run_dir),
        mode=mode,
        config=config,
        settings=wandb.Settings(silent=True),
    )
    if mode == "offline":
        print(f"wandb: offline run in {run.dir} (no API key); upload later with `wandb sync`")
    return run


def log(run: Any, row: dict) -> None:
    if run is not None:
        run.log(row, step=row["epoch"])


def finish(
    run: Any, test_report: Any, logits: torch.Tensor, test: Any, temperature: float, checkpoint: Path, version: str
) -> None:
    if run is None:
        return
    import wandb

    pred = logits.argmax(1)
    run.summary.update(
        {
            "test/accuracy": test_report.accuracy,
            "test/loss": test_report.loss,
            "test/ece": test_report.ece,
            "temperature": temperature,
            "model_version": version,
            **{f"test/accuracy_digit_{d}": a for d, a in enumerate(test_report.per_class_accuracy)},
        }
    )
    run.log(
        {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=test.labels.tolist(), preds=pred.tolist(), class_names=[str(d) for d in range(10)]
            )
        }
    )
    probs = (logits / temperature).softmax(1)
    table = wandb.Table(columns=["index", "image", "label", "predicted", "confidence"])
    wrong = (pred != test.labels).nonzero().flatten()[:MAX_MISCLASSIFIED]
    for i in wrong.tolist():
        table.add_data(i, wandb.Image(test.images[i].numpy()), int(test.labels[i]), int(pred[i]), float(probs[i].max()))
    run.log({"test/misclassified": table})
    artifact = wandb.Artifact(
        "digits-encoder", type="model", metadata={"version": version, "test_accuracy": test_report.accuracy}
    )
    artifact.add_file(str(checkpoint))
    run.log_artifact(artifact)
    run.finish()


def summary(run: Any, comparison: dict) -> None:
    """Fine-tuning's before/after figures (MNIST test, held-out corrections) in the run's summary."""
    if run is None or not comparison:
        return
    run.summary.update(
        {f"finetune/{when}/{name}": value for when, row in comparison.items() for name, value in row.items()}
    )


def finish_gate(run: Any, figures: dict, checkpoint: Path, version: str) -> None:
    """`digits-train-gate`'s end: its figures in the run's summary and the checkpoint as an artifact."""
    if run is None:
        return
    import wandb

    run.summary.update({f"gate/{k}": v for k, v in figures.items()} | {"model_version": version})
    artifact = wandb.Artifact("digits-encoder", type="model", metadata={"version": version, **figures})
    artifact.add_file(str(checkpoint))
    run.log_artifact(artifact)
    run.finish()
