"""Regenerate data/docs/ from the Python Language Reference topics bundled with CPython.

Source: the `pydoc_data.topics` module of CPython (the text `help("with")` shows),
licensed under the PSF License Version 2 (see LICENSE-PSF.txt). The corpus in
this repository was generated with CPython 3.11.7; other versions give slightly
different text.

Usage: python data/make_corpus.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from pydoc_data.topics import topics

MIN_CHARS = 800  # shorter topics (e.g. "pass", "await") are a sentence or two
# Aggregates of other topics ("Compound statements" contains the if/while/for/
# try/with/def/class topics, "Special method names" the customization ones),
# and "else", a copy of "if": kept out so each passage lives in one document.
DUPLICATES = {"compound", "specialnames", "else"}

DOCS = Path(__file__).resolve().parent / "docs"


def title_of(text: str) -> str:
    """The topic's own heading (its first line), without the quotes that the
    plain-text renderer puts around keywords: 'The "with" statement' -> 'The with statement'."""
    return text.splitlines()[0].replace('"', "").strip()


def main() -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    chosen = sorted(name for name, text in topics.items()
                    if len(text) >= MIN_CHARS and name not in DUPLICATES)
    for name in chosen:
        text = topics[name]
        (DOCS / f"{name}.md").write_text(f"# {title_of(text)}\n\n{text}", encoding="utf-8")
    print(f"wrote {len(chosen)} documents to {DOCS} from Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
