"""Fixtures of the end-to-end tests that several modules share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from testkit.server_process import ServerProcess


@pytest.fixture(scope="module")
def store_server(shipped_model_path, tmp_path_factory):
    """A real digits server keeping corrections in a real SQLite feedback store (`.db`), one per module
    so that each module counts only its own records."""
    db = tmp_path_factory.mktemp("feedback") / "feedback.sqlite3"
    server = ServerProcess(model=shipped_model_path, args=["--workers", "1", "--feedback-db", str(db)])
    server.start()
    server.db = db
    yield server
    server.close()


@pytest.fixture(scope="module")
def reference(shipped_model_path):
    """The model in-process: what the server must answer, computed the offline evaluation's way."""
    loaded = load_checkpoint(shipped_model_path)

    @torch.inference_mode()
    def probabilities(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).view(-1, 1, 28, 28).float().div_(255)
        return torch.softmax(loaded.model(x) / loaded.temperature, dim=1).numpy()

    probabilities.version = loaded.version
    return probabilities
