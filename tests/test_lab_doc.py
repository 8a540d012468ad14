"""docs/lab.md cannot go stale: every command in it runs, in order, in a scratch directory,
and prints what the page shows (durations and sizes aside). After a deliberate change,
``python tests/lab_doc.py docs/lab.md`` rewrites the outputs; review the diff."""

from __future__ import annotations

from pathlib import Path

from lab_doc import REPO, normalise, run_document

DOC = REPO / "docs" / "lab.md"


def test_every_command_prints_what_the_walkthrough_shows(tmp_path: Path) -> None:
    steps = run_document(DOC, tmp_path)
    assert len(steps) >= 15
    for step in steps:
        assert step.status == 0, f"{step.command}\n{step.actual[-2000:]}"
        assert normalise(step.actual) == normalise(step.expected), step.command
