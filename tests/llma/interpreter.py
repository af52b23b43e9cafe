"""Running a test file's Triton kernels on CPU: Triton's interpreter must be switched on before triton
is imported, so the parent test run starts a child pytest on the file with TRITON_INTERPRET=1, and
the child runs the tests defined under the file's `if os.environ.get("TRITON_INTERPRET") != "1": ...
else:` branch."""
import ast
import os
import subprocess
import sys
from pathlib import Path


def interpreter_tests(path: str) -> list[str]:
    """The tests the child runs: those defined under the file's `else:` (TRITON_INTERPRET=1)."""
    tree = ast.parse(Path(path).read_text())
    branch = next(node for node in tree.body if isinstance(node, ast.If) and "TRITON_INTERPRET" in
                  ast.unparse(node.test))
    return [node.name for node in ast.walk(ast.Module(body=branch.orelse, type_ignores=[]))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def run_in_interpreter(path: str, timeout: int) -> None:
    """Run the file's interpreter tests in a child pytest; assert every one of them passed."""
    expected = interpreter_tests(path)
    assert expected, "no interpreter tests found under the TRITON_INTERPRET branch"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:xdist", path]
    child = subprocess.run(cmd, cwd=Path(path).resolve().parents[2], env=env, capture_output=True, text=True,
                           timeout=timeout)
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    summary = child.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{len(expected)} passed") and "failed" not in summary, child.stdout[-2000:]
    passed = {line.split("::")[-1] for line in child.stdout.splitlines() if line.startswith("PASSED ")}
    assert passed == set(expected), child.stdout[-2000:]
