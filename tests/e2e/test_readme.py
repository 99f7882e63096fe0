"""The README's curl examples work as written: each shell block that calls curl runs in
bash against a real server, with its <placeholders> filled in from the answers before it,
and every request in it must succeed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keys import first_admin_key
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
STATUS = "__STATUS__"
# Every curl in a block reports its status on a line of its own.
CURL_REPORTING = f"curl() {{ command curl -w '\\n{STATUS}%{{http_code}}\\n' \"$@\"; }}\n"


def curl_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [block for block in blocks if "curl " in block]


def run_block(
    block: str, url: str, values: dict[str, str], env: dict[str, str]
) -> list[tuple[int, str]]:
    """(status, body) of every request the block makes, in order."""
    script = block.replace("localhost:4521", url.removeprefix("http://"))
    for name, value in values.items():
        script = script.replace(f"<{name}>", value)
    unfilled = re.findall(r"<(\w+)>", script)
    assert not unfilled, f"no value for {unfilled} in:\n{block}"
    done = subprocess.run(
        ["bash", "-c", CURL_REPORTING + script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    # "<output 1>__STATUS__201\n<output 2>__STATUS__200\n": each status closes an output.
    chunks = done.stdout.split(STATUS)
    answers = []
    for index, chunk in enumerate(chunks[:-1]):
        output = chunk if index == 0 else chunk.split("\n", 1)[1]
        # text mode turned the headers' CRLF into LF
        body = output.split("\n\n", 1)[1] if output.startswith("HTTP/") else output
        answers.append((int(chunks[index + 1][:3]), body.strip()))
    return answers


def last_json(answers: list[tuple[int, str]]) -> Any:
    return json.loads(answers[-1][1])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_curl_example_in_the_readme_works(database_url: str, tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is missing: `make test` installs it"
    blocks = curl_blocks()
    assert len(blocks) >= 10, "the README lost its examples"
    values: dict[str, str] = {}
    # As on a first `make run`: the first admin key, printed alone on the last line.
    key = first_admin_key(database_url)
    keyed = {"BOXOFFICE_OPEN_ACCESS": "false"}
    with ServerProcess(database_url, log_dir=tmp_path, env=keyed) as server:
        for block in blocks:
            if "DELETE" in block and "holdId" in values:
                # The checkout block confirmed the hold: release a fresh one instead.
                item = {"sectionId": values["gaId"], "qty": 1}
                fresh = httpx.post(
                    f"{server.url}/holds",
                    json={"eventId": values["eventId"], "items": [item]},
                    headers={"Authorization": f"Bearer {key}"},
                )
                values["holdId"] = fresh.json()["id"]
            answers = run_block(block, server.url, values, {"KEY": key})
            assert answers, f"no request ran in:\n{block}"
            for status, body in answers:
                assert 200 <= status < 300, f"{status} {body}\nfrom:\n{block}"
            created = last_json(answers) if answers[-1][1].startswith("{") else {}
            if "sections" in created:
                values["eventId"] = created["id"]
                values["vipId"] = created["sections"][0]["id"]
                values["gaId"] = values["sectionId"] = created["sections"][1]["id"]
            elif "items" in created and "status" in created:
                values["holdId"] = created["id"]
            elif "sectionId" in created and "qty" in created:
                values["bookingId"] = created["id"]
            elif "ticket" in created:
                values["ticket"] = created["ticket"]
                if created["admissionToken"]:
                    values["admissionToken"] = created["admissionToken"]
    assert {"eventId", "holdId", "bookingId", "ticket", "admissionToken"} <= set(values)
