"""Issue #24: the start-up's index build shows its progress in the status line (the page polls it),
and a folder holding only a killed first build's `.build.lock` is built as a first start."""
from __future__ import annotations

import shutil
from pathlib import Path

from ui.service import Service

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"


def docs_folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("integers.md", "assert.md"):
        shutil.copy(DOCS / name, docs / name)
    return docs


def start(docs: Path, index: Path) -> tuple[Service, list[str]]:
    seen: list[str] = []
    service = Service(docs, index, loader=lambda *a: object())
    progress = service._progress

    def recording(stage: str, done: int, total: int) -> None:
        progress(stage, done, total)
        seen.append(service.status)

    service._progress = recording  # type: ignore[method-assign]
    service.start(background=False)
    assert service.ready.is_set(), service.status
    return service, seen


def test_startup_status_shows_the_builds_progress(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    (index / ".build.lock").write_text("")  # all a killed first build left
    service, seen = start(docs_folder(tmp_path), index)
    assert seen and all(s.startswith("Building the index (first start") for s in seen), seen
    assert any("reading files 0/2" in s for s in seen)
    last = [s for s in seen if "embedding chunks" in s][-1]
    done, total = last.split("embedding chunks ")[1].split(" ")[0].split("/")
    assert done == total and int(total) > 0
    assert not any("console" in s or str(tmp_path) in s for s in seen)  # no absolute paths
    assert service.status.startswith("Ready. Index: ") and str(tmp_path) not in service.status

    again, seen = start(tmp_path / "docs", index)
    assert seen and all(s.startswith("Updating the index") for s in seen), seen
