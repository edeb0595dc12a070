"""Another git revision checked out beside this tree, for a benchmark that runs both side by
side."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add(revision: str, path: Path) -> Path:
    """``revision`` checked out (detached) at ``path``, a worktree of this repository."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), revision],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return path


def remove(path: Path) -> None:
    """The worktree at ``path`` gone, if it is there."""
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(path)],
        cwd=REPO,
        check=False,
        capture_output=True,
    )
