"""The first hour with certq: the README's commands, in the order a newcomer runs them, agree with each other.

The demo runs in the background (its own home, its simulated sites, its server); a second "terminal" (another
process) points at the demo's home with the one line the demo prints, and keys, lookups and uploads there
see the same database and the same sites. A fresh home with only uploaded records answers honestly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.sandbox.fixed import FIXED_HOLDERS
from tests.records_support import mem_row, write_csv
from tests.redis_server import free_port

CERTQ = [sys.executable, "-m", "aggregator.cli"]
MA = next(h for h in FIXED_HOLDERS if h.name == "马超")  # issued after the last upload: only the live site knows
ZHANG = next(h for h in FIXED_HOLDERS if h.name == "张伟")


def clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without certq's settings (the tests set some): a newcomer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTQ_")}
    env.update(extra)
    env["COLUMNS"] = "80"
    return env


def certq(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTQ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    """`certq demo` in the background (a small data set), until it serves; (its cwd, port, its output)."""
    cwd = tmp_path_factory.mktemp("newcomer")
    port = free_port()
    log = cwd / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CERTQ, "demo", "--holders", "200", "--port", str(port)],
            env=clean_env(),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start serving:\n{log.read_text()}")
            time.sleep(0.3)
        yield cwd, port, log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_second_terminal_pointed_at_the_demo_home_sees_its_database_sites_and_keys(demo) -> None:
    cwd, port, output = demo
    line = re.search(r"export CERTQ_HOME=(\S+)", output)
    assert line, output
    env = clean_env(CERTQ_HOME=line.group(1))

    keys = json.loads(certq("keys", "list", "--json", env=env, cwd=cwd).stdout)
    assert {k["role"] for k in keys if not k.get("revoked_at")} >= {"employer", "regulator", "department", "admin"}

    uploads = certq("uploads", "list", env=env, cwd=cwd)
    assert uploads.returncode == 0 and "mem" in uploads.stdout and "2026Q" in uploads.stdout

    # Only the demo's simulated MEM site knows this card: answering valid proves the home points at it.
    found = certq("lookup", "T" + MA.id_number, "--name", MA.name, "--json", env=env, cwd=cwd)
    assert found.returncode == 0, found.stdout + found.stderr
    assert json.loads(found.stdout)["verdict"] == "valid"

    # The employer key the demo printed works against the demo's server.
    employer = re.search(r"employer\s+│?\s*(\S+)", output)
    assert employer, output
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/certificates/T{ZHANG.id_number}?name={urllib.request.quote(ZHANG.name)}",
        headers={"Authorization": f"Bearer {employer.group(1)}"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        answer = json.load(r)
    assert answer["verdict"] == "valid"

    audit = certq("audit", "--limit", "5", "--json", env=env, cwd=cwd)
    assert audit.returncode == 0
    assert any(json.loads(line)["number"] == "T" + ZHANG.id_number for line in audit.stdout.splitlines())


def test_a_fresh_home_with_only_uploaded_records_answers_not_found_not_inconclusive(tmp_path: Path) -> None:
    env = clean_env(CERTQ_HOME=str(tmp_path / "home"))
    path = write_csv(tmp_path / "mem-2026Q3.csv", [mem_row(ZHANG.id_number, ZHANG.name)])
    imported = certq("import", str(path), "--department", "mem", "--quarter", "2026Q3", env=env, cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr

    held = certq("lookup", "T" + ZHANG.id_number, "--json", env=env, cwd=tmp_path)
    assert held.returncode == 0 and json.loads(held.stdout)["verdict"] == "valid"

    unknown = certq("lookup", "T" + MA.id_number, "--json", env=env, cwd=tmp_path)
    answer = json.loads(unknown.stdout)
    assert unknown.returncode == 3 and answer["verdict"] == "not_found" and answer["complete"]
    mem_api = next(s for s in answer["sources"] if s["source"] == "mem_api")
    assert mem_api["outcome"] == "skipped" and "not configured" in mem_api["message"]


def test_an_endpoint_that_is_not_a_url_is_a_start_up_error_naming_file_and_key(tmp_path: Path) -> None:
    env = clean_env(CERTQ_HOME=str(tmp_path / "home"), CERTQ_MEM_URL="127.0.0.1:18701")  # no scheme
    result = certq("lookup", "T" + ZHANG.id_number, env=env, cwd=tmp_path)
    assert result.returncode == 78
    assert "mem_api.toml: endpoint" in result.stderr.replace("\n", "") and "not an http(s) URL" in result.stderr


def test_doctor_says_what_is_in_use_and_what_is_not_configured(tmp_path: Path) -> None:
    env = clean_env(CERTQ_HOME=str(tmp_path / "home"))
    result = certq("doctor", "--json", env=env, cwd=tmp_path)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"]
    by_what = {c["what"]: c for c in report["checks"]}
    assert str(tmp_path / "home") in by_what["家目录 home"]["detail"]
    assert by_what["数据源 mem_api"]["status"] == "off" and "CERTQ_MEM_URL" in by_what["数据源 mem_api"]["hint"]
    assert by_what["Redis"]["status"] == "off"

    env["CERTQ_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    broken = certq("doctor", "--json", env=env, cwd=tmp_path)
    assert broken.returncode == 1
    assert {c["what"]: c["status"] for c in json.loads(broken.stdout)["checks"]}["Redis"] == "fail"
