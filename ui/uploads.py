"""Check uploaded documents and copy the acceptable ones into the documents folder."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ALLOWED_SUFFIXES = (".txt", ".md", ".html", ".pdf", ".jsonl")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOADS_SUBDIR = "uploads"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class UploadResult:
    saved: list[str] = field(default_factory=list)  # file names written into the uploads folder
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    def message(self) -> str:
        lines = []
        if self.saved:
            lines.append("Added: " + ", ".join(self.saved))
        for name, reason in self.rejected:
            lines.append(f"Not added: {name}: {reason}")
        return "\n".join(lines) or "No files were uploaded."


def safe_name(name: str) -> str:
    """A plain file name (no folders, no odd characters) that keeps the suffix."""
    base = Path(name.replace("\\", "/")).name
    stem, suffix = Path(base).stem, Path(base).suffix.lower()
    stem = _UNSAFE.sub("_", stem).strip("._") or "document"
    return stem[:80] + suffix


def check_upload(path: Path, display_name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> str | None:
    """The reason the file cannot be added, or None when it can."""
    suffix = Path(display_name).suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        return (f"unsupported file type {suffix or '(no extension)'!r}; "
                f"supported: {', '.join(ALLOWED_SUFFIXES)}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read the upload ({exc.strerror or exc})"
    if size > max_bytes:
        return f"too large ({size / 2**20:.1f} MB; limit {max_bytes / 2**20:.0f} MB)"
    if size == 0:
        return "the file is empty"
    return None


def save_uploads(paths: list[str] | None, docs_dir: Path | str,
                 max_bytes: int = MAX_UPLOAD_BYTES) -> UploadResult:
    """Copy every acceptable upload into `docs_dir/uploads/`; list the others with the reason."""
    result = UploadResult()
    target = Path(docs_dir) / UPLOADS_SUBDIR
    for raw in paths or []:
        path = Path(str(raw))
        name = path.name
        reason = check_upload(path, name, max_bytes)
        if reason:
            result.rejected.append((name, reason))
            continue
        target.mkdir(parents=True, exist_ok=True)
        dest = target / safe_name(name)
        shutil.copyfile(path, dest)
        result.saved.append(dest.name)
    return result
