"""One real app (`python app.py`, bundled model, tiny docs folder in tmp) per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app_fakes import free_port

ROOT = Path(__file__).resolve().parents[2]
TINY_DOCS = ["integers.md", "assert.md", "power.md", "nonlocal.md"]
MAX_NEW_TOKENS = 40
START_TIMEOUT_S = 420


class LiveApp:
    def __init__(self, url: str, docs: Path, index: Path, log: Path, proc: subprocess.Popen):
        self.url, self.docs, self.index, self.log, self.proc = url, docs, index, log, proc

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def live_app(tmp_path_factory) -> LiveApp:
    base = tmp_path_factory.mktemp("live_app")
    docs, index = base / "docs", base / "index"
    docs.mkdir()
    for name in TINY_DOCS:
        shutil.copy(ROOT / "data" / "docs" / name, docs / name)
    port = free_port()
    log = base / "app.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
           "--docs", str(docs), "--index", str(index), "--device", "cpu",
           "--max-new-tokens", str(MAX_NEW_TOKENS)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    app = LiveApp(f"http://127.0.0.1:{port}/", docs, index, log, proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            text = app.log_text()
            if "llma-rag.app: Ready." in text:
                break
            if "Start-up failed" in text or proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"app did not start (rc={proc.poll()}); log:\n{text[-4000:]}")
            time.sleep(0.5)
        yield app
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def client(live_app):
    from gradio_client import Client

    return Client(live_app.url, verbose=False, download_files=False)
