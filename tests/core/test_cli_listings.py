"""Terminal output people type back from: whole key ids at 80 columns, revoking by a unique prefix, and every
listing as JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import main
from tests.records_support import mem_row, write_csv


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CERTQ_HOME", str(tmp_path / "home"))
    for name in ("CERTQ_DATABASE_URL", "CERTQ_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args), env={"COLUMNS": "80"}, catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


def make_key(run, role: str = "employer", label: str = "某建筑公司 人事部 用于入职核验的一个相当长的标签") -> str:
    code, out = run("keys", "create", "--role", role, "--label", label)
    assert code == 0, out
    return out.split("key id ")[1].split(" ")[0]


def test_keys_list_shows_whole_ids_at_80_columns_and_revoke_takes_a_unique_prefix(run) -> None:
    first, second = make_key(run), make_key(run)
    code, out = run("keys", "list")
    assert code == 0 and first in out and second in out  # never cut to "3f9a0c…"
    assert max(map(len, out.splitlines())) <= 80

    common = 0
    while first[: common + 1] == second[: common + 1]:
        common += 1
    if common:  # an ambiguous prefix is refused, naming the keys it matches
        code, out = run("keys", "revoke", first[:common])
        assert code == 1 and first in out and second in out
    code, out = run("keys", "revoke", first[: common + 1])
    assert code == 0 and first in out
    keys = json.loads(run("keys", "list", "--json")[1])
    assert {k["key_id"]: bool(k["revoked_at"]) for k in keys} == {first: True, second: False}
    rows = list(csv.DictReader(io.StringIO(run("keys", "list", "--csv")[1])))
    assert {r["key_id"] for r in rows} == {first, second}


def test_uploads_sources_and_audit_list_as_json_and_csv(run, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])
    assert run("import", str(path), "--department", "mem", "--quarter", "2026Q3")[0] == 0
    [batch] = json.loads(run("uploads", "list", "--json")[1])
    [row] = list(csv.DictReader(io.StringIO(run("uploads", "list", "--csv")[1])))
    assert row["id"] == str(batch["id"]) and row["quarter"] == "2026Q3" and row["status"] == "imported"

    sources = {s["id"]: s for s in json.loads(run("sources", "--json")[1])}
    assert sources["mem_records"]["state"] == "enabled"
    code, out = run("sources")
    assert code == 0 and "mem_records" in out and max(map(len, out.splitlines())) <= 80
    assert list(csv.DictReader(io.StringIO(run("audit", "--csv")[1]))) == []
    code, out = run("audit")  # nothing yet: a sentence saying what is recorded, not an empty table
    assert code == 0 and "no audit entries match" in out and "┃" not in out
    assert json.loads(run("recognition", "--json")[1])["entries"][0]["entry"] == 1
