"""Run the commands of a Markdown walkthrough and compare their output with the document's.

Console blocks (```console) hold ``$ command`` lines (a trailing ``\\`` continues one) and
the output the command prints after them. :func:`run_document` runs every command with bash
in a scratch directory where ``sample_flows`` is the repository's, with the virtualenv's
``tierflow`` first on ``PATH``, and returns per command the expected and the actual output,
both normalised: durations (``0.27 s``) and sizes (``4779 KiB``) are volatile, so they read
``N s`` / ``N KiB``. :func:`update_document` writes the actual outputs back into the file
(``python tests/lab_doc.py docs/lab.md`` after a deliberate change).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
_VOLATILE = ((re.compile(r"\b\d+(\.\d+)? s\b"), "N s"),
             (re.compile(r"\b\d+ KiB\b"), "N KiB"),
             (re.compile(r"\bDone in N s\b"), "Done in N s"))


@dataclass
class Step:
    command: str
    expected: str
    actual: str = ""
    status: int = 0


def normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def parse(text: str) -> list[Step]:
    steps: list[Step] = []
    for block in _BLOCK.findall(text):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            out = []
            while i < len(lines) and not lines[i].startswith("$ "):
                out.append(lines[i])
                i += 1
            steps.append(Step(command, "\n".join(out)))
    return steps


def run_document(path: Path, workdir: Path) -> list[Step]:
    steps = parse(path.read_text(encoding="utf-8"))
    (workdir / "sample_flows").symlink_to(REPO / "sample_flows")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
           "COLUMNS": "200", "NO_COLOR": "1", "TZ": "UTC"}
    for step in steps:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", step.command], cwd=workdir,
                              env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        step.actual, step.status = done.stdout + done.stderr, done.returncode
    return steps


def update_document(path: Path, workdir: Path) -> None:
    """Rewrite each command's output in ``path`` with what it prints now."""
    steps = iter(run_document(path, workdir))

    def block(m: re.Match[str]) -> str:
        out = []
        for _ in parse(f"```console\n{m.group(1)}```"):
            step = next(steps)
            shown = step.command if len(step.command) < 96 else _wrap(step.command)
            out.append(f"$ {shown}\n{step.actual.rstrip()}".rstrip())
        return "```console\n" + "\n".join(out) + "\n```"

    path.write_text(_BLOCK.sub(block, path.read_text(encoding="utf-8")), encoding="utf-8")


def _wrap(command: str) -> str:
    """A long command over several lines at its options."""
    parts = re.split(r" (?=--)", command)
    lines, line = [], parts[0]
    for part in parts[1:]:
        if len(line) + len(part) + 1 > 90:
            lines.append(line + " \\")
            line = "    " + part
        else:
            line += " " + part
    return "\n".join([*lines, line])


if __name__ == "__main__":
    import tempfile

    for name in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            update_document(Path(name), Path(tmp))
