"""The repository as committed: no merge left half done in any tracked text file.

A conflict marker once stayed in docs/performance.md for a whole session after a
merge: nothing that reads the docs would notice, so this looks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def test_no_tracked_file_keeps_a_conflict_marker() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, tracked):
        path = ROOT / name.decode()
        if path.suffix in {".png", ".json"} or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [
            f"{name.decode()}:{text[: m.start()].count(chr(10)) + 1}" for m in MARKER.finditer(text)
        ]
    assert found == []
