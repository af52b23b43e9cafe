"""`python -m rag ask`: an answer with marked spans, and a clear one-line error for bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from index import EmbedderMismatchError
from rag import RAGPipeline
from rag.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["ask", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_prints_the_answer_sources_and_statistics(capsys: pytest.CaptureFixture[str], index_dir: Path) -> None:
    code, out, err = run(capsys, "What is a volcano?", "--index", str(index_dir), "--max-new-tokens", "12",
                         "--device", "cpu")
    assert code == 0, err
    assert "volcano.txt, score" in out and "tokens/forward" in out and "llma:" in out
    assert "\033[" not in out  # not a terminal: no colors


def test_missing_index_names_the_build_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "What?", "--index", str(tmp_path / "nothing"))
    assert code == 1 and "python -m index build" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("suffix", [".faiss", ".jsonl"])
def test_corrupt_index_names_the_file(capsys: pytest.CaptureFixture[str], index_dir: Path, tmp_path: Path,
                                      suffix: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(index_dir, broken)
    victim = next(broken.glob(f"*{suffix}"))  # the files a search reads (vectors and chunks)
    victim.write_bytes(b"garbage")
    code, _, err = run(capsys, "What?", "--index", str(broken))
    assert code == 1 and victim.name in err and "python -m index build" in err


def test_empty_question_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "  ")
    assert code == 1 and "question is empty" in err


def test_unknown_model_offline_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "What?", "--no-index", "--model", "no-such-org/no-such-model")
    assert code == 1 and "cannot load model 'no-such-org/no-such-model'" in err and len(err.strip().splitlines()) == 1


def test_an_index_built_with_another_embedder_is_refused(index_dir: Path) -> None:
    with pytest.raises(EmbedderMismatchError, match="was built with embedder"):
        RAGPipeline.from_paths(str(index_dir), embedder="some-other/embedder")


def test_a_bad_penalty_is_refused_before_the_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "What?", "--no-index", "--repetition-penalty", "0",
                       "--model", "no-such-org/no-such-model")  # refused before the load is tried
    assert code == 1 and "repetition_penalty must be > 0" in err and len(err.strip().splitlines()) == 1


def test_ask_streams_the_answer_as_it_is_generated(monkeypatch: pytest.MonkeyPatch, index_dir: Path) -> None:
    """Issue #24: the answer reaches stdout piece by piece while the decoder still runs: the first
    piece is written before the stream's last delta exists."""
    events: list[str] = []
    written: list[str] = []
    original = RAGPipeline.stream

    def stream(self, *args, **kwargs):
        for delta in original(self, *args, **kwargs):
            events.append("final" if delta.done else "delta")
            yield delta

    class Out:
        def write(self, text: str) -> int:
            if text:
                events.append("write")
                written.append(text)
            return len(text)

        def flush(self) -> None:
            events.append("flush")

        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(RAGPipeline, "stream", stream)
    monkeypatch.setattr("sys.stdout", Out())
    code = main(["ask", "What is a volcano?", "--index", str(index_dir), "--max-new-tokens", "16",
                 "--device", "cpu", "--no-llma"])  # greedy: one token per delta
    assert code == 0
    assert events.index("write") < events.index("final")
    pieces_before_final = events[:events.index("final")].count("write")
    assert pieces_before_final >= 3  # piece by piece, not one block at the end
    text = "".join(written)
    assert "tokens in" in text and "volcano.txt" in text


def test_min_score_defaults_to_the_measured_one(capsys: pytest.CaptureFixture[str]) -> None:
    from rag.cli import _parser
    from rag.types import DEFAULT_MIN_SCORE

    assert _parser().parse_args(["ask", "q"]).min_score == DEFAULT_MIN_SCORE
