"""Fixtures of the end-to-end tests that several modules share."""

from __future__ import annotations

import pytest

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
