"""The repository carries its own data: no tracked file points outside it (a user's clone has nothing beside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|shared/reference|parents\[\d+\]\s*/\s*[\"']shared[\"']")


def test_no_tracked_file_reads_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    offenders = []
    for name in tracked.splitlines():
        path = REPO / name
        if name == "tests/test_self_contained.py" or path.suffix not in {".py", ".md", ".yml", ".toml", ""}:
            continue
        if path.is_file() and OUTSIDE.search(path.read_text(errors="ignore")):
            offenders.append(name)
    assert offenders == [], f"files that point outside the repository: {offenders}"
