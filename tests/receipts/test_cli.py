"""Receipts on the command line: `certq lookup --receipt`, `certq receipts show`, and `certq receipts verify`
offline with nothing but the key set, including after `certq keys rotate-signing`."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from click.testing import CliRunner

from aggregator.cli import main
from aggregator.receipts.store import ReceiptStore
from aggregator.records import RecordStore
from tests.web_support import MEM_NUMBER, build_env


async def _jwks(url: str) -> dict:
    records = await RecordStore.open(url)
    try:
        return await ReceiptStore(records.engine).jwks()
    finally:
        await records.close()


def test_lookup_receipt_then_verify_offline_also_after_a_rotation(tmp_path: Path, monkeypatch) -> None:
    env = build_env(tmp_path / "db")
    monkeypatch.setenv("CERTQ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CERTQ_SIGNING_KEY_FILE", raising=False)  # this home's own key, made by the rotation
    monkeypatch.setenv("CERTQ_DATABASE_URL", env.database_url)
    monkeypatch.setenv("CERTQ_PUBLIC_URL", "https://certq.example")
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "rotate-signing"]).exit_code == 0

    looked = runner.invoke(main, ["lookup", MEM_NUMBER, "--name", "张小三", "--receipt", "--deadline", "2"])
    assert looked.exit_code == 0, looked.output
    [receipt_id] = re.findall(r"https://certq\.example/r/([\w-]+)", looked.output)[:1]

    shown = runner.invoke(main, ["receipts", "show", receipt_id, "--json"])
    assert shown.exit_code == 0, shown.output
    token = json.loads(shown.output)["token"]
    (tmp_path / "receipt.jwt").write_text(token, encoding="utf-8")
    (tmp_path / "jwks.json").write_text(json.dumps(asyncio.run(_jwks(env.database_url))), encoding="utf-8")
    ok = runner.invoke(main, ["receipts", "verify", str(tmp_path / "receipt.jwt"), "--jwks", str(tmp_path / "jwks.json")])
    assert ok.exit_code == 0 and "签名有效" in ok.output and "张小三" in ok.output

    assert runner.invoke(main, ["keys", "rotate-signing"]).exit_code == 0
    (tmp_path / "jwks.json").write_text(json.dumps(asyncio.run(_jwks(env.database_url))), encoding="utf-8")
    assert len(json.loads((tmp_path / "jwks.json").read_text())["keys"]) == 2
    still = runner.invoke(main, ["receipts", "verify", str(tmp_path / "receipt.jwt"), "--jwks", str(tmp_path / "jwks.json")])
    assert still.exit_code == 0, still.output

    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    (tmp_path / "bad.jwt").write_text(tampered, encoding="utf-8")
    bad = runner.invoke(main, ["receipts", "verify", str(tmp_path / "bad.jwt"), "--jwks", str(tmp_path / "jwks.json")])
    assert bad.exit_code == 65
