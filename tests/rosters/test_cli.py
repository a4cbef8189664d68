"""`certq rosters` as a user runs it: a roster file in, a run verified in this process (SQLite home) against the
simulated sites, the results out as a CSV with Chinese headers; a bad file refused with its lines and columns."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from datetime import date
from pathlib import Path

import pytest

from aggregator.models import CertStatus, Department
from aggregator.sandbox.dataset import generate
from aggregator.sandbox.server import Sandbox

CERTQ = [sys.executable, "-m", "aggregator.cli"]
DATASET = generate(seed=11, holders=60, today=date(2026, 11, 25))
ORG = "某建设集团 人事部"


def valid_mem_cards(n: int):
    uploaded = {c.number for c in DATASET.uploaded[Department.MEM]}
    cards = [c for c in DATASET.live[Department.MEM]
             if c.status == CertStatus.VALID and c.number in uploaded and c.number not in DATASET.differences
             and c.valid_until is not None and c.valid_until > date(2027, 6, 1)]
    assert len(cards) >= n
    return cards[:n]


class Cli:
    def __init__(self, home: Path, urls: dict[str, str]) -> None:
        self.env = {"CERTQ_HOME": str(home), "COLUMNS": "80", **urls}
        if os.environ.get("CERTQ_SIGNING_KEY_FILE"):
            self.env["CERTQ_SIGNING_KEY_FILE"] = os.environ["CERTQ_SIGNING_KEY_FILE"]
        self.cwd = home.parent

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        """`certq rosters ARGS` in this process (a fresh interpreter per call costs ~2 s of imports), in a thread
        since the command runs its own event loop, with exactly the environment a terminal would give it."""
        from click.testing import CliRunner

        from aggregator.cli import main

        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CERTQ_")}
        env.update(self.env)
        cwd = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(CliRunner(env=env).invoke, main, ["rosters", *args]), timeout=60
            )
        finally:
            os.chdir(cwd)
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
async def cli(tmp_path: Path):
    """The CLI against a fresh SQLite home, its live sources pointed at simulated sites on ports of their own."""
    async with Sandbox(DATASET) as sb:
        urls = {f"CERTQ_{site.upper()}_URL": sb.urls[sb.sites[site].source_id] for site in sb.sites}
        yield Cli(tmp_path / "home", urls)


async def test_create_verify_and_export_a_roster(cli: Cli, tmp_path: Path) -> None:
    cards = valid_mem_cards(3)
    roster_file = tmp_path / "staff.csv"
    roster_file.write_text(
        "工号,姓名,证书编号,部门/班组\n"
        + "".join(f"E{i},{c.holder_name},{c.number},电气班\n" for i, c in enumerate(cards, 1)),
        encoding="utf-8",
    )
    code, out, err = await cli("create", str(roster_file), "--name", "一标段", "--org", ORG)
    assert code == 0, err
    roster_id = re.search(r"roster created\s+(\w+)", out).group(1)
    assert "成员 members 3" in out

    code, out, err = await cli("verify", roster_id, "--org", ORG, "--wait")
    assert code == 0, err
    assert "finished" in out and "3/3" in out
    assert "有效 (valid)" in out  # the counts by verdict

    code, out, err = await cli("export", roster_id, "--org", ORG, "--format", "csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out.lstrip("\ufeff"))))
    assert rows[0][:5] == ["工号", "姓名", "证书编号", "部门/班组", "结论"]
    assert sorted(r[0] for r in rows[1:]) == ["E1", "E2", "E3"]  # one line per member
    assert {r[4] for r in rows[1:]} == {"有效"}
    assert {r[2] for r in rows[1:]} == {c.number for c in cards}

    # another organisation sees no such roster
    code, _out, err = await cli("export", roster_id, "--org", "另一家公司")
    assert code == 66 and roster_id in err


async def test_a_bad_roster_file_is_refused_with_its_lines_and_columns(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("工号,姓名,证书编号\nE1,张伟,T110105199003071239\nE2,李四,XYZ\nE1,王五,T110105199003071239\n",
                   encoding="utf-8")
    code, out, err = await cli("create", str(bad), "--name", "一标段", "--org", ORG)
    assert code == 65, (out, err)
    assert "名单未创建" in err
    lines = [line for line in err.splitlines() if line.startswith("│")]
    assert any(re.match(r"│ 3\s+│ 证书编号\s+│ XYZ", line) for line in lines), err
    assert any(re.match(r"│ 4\s+│ 工号\s+│ E1", line) for line in lines), err
    assert all(len(line) <= 80 for line in err.splitlines())
    code, out, err = await cli("list", "--org", ORG, "--json")
    assert code == 0 and json.loads(out) == []  # nothing was created
