"""The CLI's commands other than `serve` start without the web stack.

Scripts and tests run `boxoffice check`, `audit verify` and `keys …` often;
importing FastAPI and uvicorn for them cost each about 0.8 s of CPU.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_imports_neither_fastapi_nor_uvicorn_until_it_serves() -> None:
    probe = (
        "import sys, boxoffice.cli; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]", found.stdout
