"""Receipts over HTTP as people use them: issued by each role with what that role may see, read back and
checked, superseded when a later lookup finds the certificate suspended, the verify page, the PDF (its text and
its QR code) and the public key set."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.receipts import document
from aggregator.receipts.pdf import ReceiptFontMissing, find_font
from aggregator.records import RecordStore
from tests.web_support import (
    HEADER,
    ID_ZHANG,
    MEM_NUMBER,
    TestClient,
    WebEnv,
    build_env,
    web_client,
)

PURPOSE = "accident investigation"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> WebEnv:
    return build_env(tmp_path_factory.mktemp("receipts-web"))


@pytest.fixture(scope="module")
def client(env: WebEnv) -> Iterator[TestClient]:
    with web_client(env, base_url="https://certq.example") as c:
        yield c


def issue(client: TestClient, env: WebEnv, who: str | None = None, **body: str):
    headers = env.auth(who, purpose=PURPOSE if who == "regulator" else None)
    return client.post("/api/v1/receipts", json={"number": MEM_NUMBER, **body}, headers=headers)


def test_the_public_gets_a_signed_masked_receipt_that_verifies_with_the_jwks(client: TestClient, env: WebEnv) -> None:
    r = issue(client, env)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["signature"]["valid"] and not body["expired"] and body["superseded"] is None
    assert body["url"] == f"https://certq.example/r/{body['id']}" == r.headers["location"]
    assert len(body["id"]) >= 22  # 128 random bits
    subject = body["receipt"]["credentialSubject"]
    assert subject["verdict"] == "valid" and subject["view"] == {"role": "public", "masked": True}
    [cert] = [c for c in subject["certificates"] if c["department"] == "mem"]
    assert cert["holder_name"] == "张*三" and "holder_id_number" not in cert
    assert "holder_id_number" not in str(body["receipt"]) and "gender" not in str(body["receipt"])
    assert all(s["data_as_of"] for s in subject["sources"] if s["outcome"] == "found")
    jwks = client.get("/.well-known/jwks.json").json()
    assert document.verify(body["token"], jwks).signature_ok  # offline: the token and the key set, nothing else
    again = client.get(f"/api/v1/receipts/{body['id']}").json()
    assert again["token"] == body["token"] and again["signature"]["valid"]


def test_the_holders_name_is_shown_only_when_supplied_and_matched(client: TestClient, env: WebEnv) -> None:
    matched = issue(client, env, name="张小三").json()["receipt"]["credentialSubject"]
    assert {c["holder_name"] for c in matched["certificates"]} == {"张小三"}
    wrong = issue(client, env, name="李四").json()["receipt"]["credentialSubject"]
    assert wrong["verdict"] == "name_mismatch"
    assert "张小三" not in str(wrong) and "李四" not in str(wrong)  # whose it is, is not shown
    plain = issue(client, env).json()["receipt"]["credentialSubject"]
    assert {c["holder_name"] for c in plain["certificates"]} == {"张*三"}


def test_each_role_signs_what_it_may_see(client: TestClient, env: WebEnv) -> None:
    employer = issue(client, env, "employer", name="张小三").json()["receipt"]["credentialSubject"]
    assert employer["view"]["role"] == "employer" and employer["name_matches"] is True
    assert all("holder_id_number" not in c for c in employer["certificates"])
    regulator = issue(client, env, "regulator").json()
    assert regulator["role"] == "regulator"
    assert {c["holder_id_number"] for c in regulator["receipt"]["credentialSubject"]["certificates"]} == {ID_ZHANG}
    # a regulator must say why, as for a lookup; nothing is issued without it
    no_purpose = client.post("/api/v1/receipts", json={"number": MEM_NUMBER}, headers=env.auth("regulator"))
    assert no_purpose.status_code == 400 and no_purpose.json()["title"] == "purpose-required"
    assert client.post("/api/v1/receipts", json={"number": MEM_NUMBER},
                       headers=env.auth("revoked")).status_code == 401  # fmt: skip


def test_bad_requests_are_problems(client: TestClient, env: WebEnv) -> None:
    assert client.post("/api/v1/receipts", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    r = client.post("/api/v1/receipts", json={"number": "", "extra": 1})
    assert r.status_code == 422 and {e["loc"] for e in r.json()["errors"]} >= {"number", "extra"}
    assert client.post("/api/v1/receipts", json={"number": "<script>"}).status_code == 422
    assert client.post("/api/v1/receipts", content=b"x", headers={"content-type": "text/csv"}).status_code == 415
    missing = client.get("/api/v1/receipts/no-such-receipt")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
    assert client.get("/r/no-such-receipt").status_code == 404


async def _suspend(env: WebEnv) -> None:
    """The department's next quarter says the certificate is suspended (暂扣)."""
    store = await RecordStore.open(env.database_url)
    try:
        path = env.root / "mem-2026Q2.csv"
        path.write_text(
            HEADER + f"{MEM_NUMBER},张小三,{ID_ZHANG},男,电工作业,低压电工作业,北京市应急管理局,2020-01-02,"
            "2023-01-02,2099-01-01,2026-01-02,暂扣\n",
            encoding="utf-8",
        )
        await store.import_file(path, department="mem", quarter="2026Q2", uploaded_by="test")
    finally:
        await store.close()


def test_a_later_lookup_finding_it_suspended_supersedes_the_receipt(tmp_path: Path) -> None:
    env = build_env(tmp_path)
    with web_client(env) as client:
        first = issue(client, env).json()
        suspended_already = None
        asyncio.run(_suspend(env))
        time.sleep(1.1)  # the gateway trusts a department's import generation for a second
        looked = client.get(f"/api/v1/certificates/{MEM_NUMBER}").json()  # anyone's later lookup
        assert looked["verdict"] == "suspended"
        after = client.get(f"/api/v1/receipts/{first['id']}").json()
        assert after["superseded"]["status"] == "suspended" and after["superseded"]["at"]
        assert after["signature"]["valid"]  # what it said is still what it said
        # a receipt issued while suspended is not superseded by the same finding again
        suspended_already = issue(client, env).json()
        client.get(f"/api/v1/certificates/{MEM_NUMBER}")
        assert client.get(f"/api/v1/receipts/{suspended_already['id']}").json()["superseded"] is None
        checked = client.get(f"/api/v1/receipts/{first['id']}", params={"check": "now"}).json()
        assert checked["check_again"]["changed"] and checked["check_again"]["verdict"] == "suspended"
        assert any("有效 valid → 暂扣 suspended" in c for c in checked["check_again"]["changes"])
        page = client.get(f"/r/{first['id']}")
        assert page.status_code == 200
        assert "已被取代" in page.text and "签名有效" in page.text and "有效 valid → 暂扣 suspended" in page.text


def test_the_verify_page_and_the_lookup_pages_button(client: TestClient, env: WebEnv) -> None:
    result = client.get("/lookup", params={"number": MEM_NUMBER, "name": "张小三"})
    assert 'action="/receipts"' in result.text
    csrf = client.cookies.get("certq_csrf")
    r = client.post("/receipts", data={"csrf": csrf, "number": MEM_NUMBER, "name": "张小三"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/r/")
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    assert "签名有效" in page.text and "未过期" in page.text and "未被取代" in page.text
    assert "自签发以来无变化" in page.text and "张小三" in page.text
    assert client.post("/receipts", data={"csrf": "wrong", "number": MEM_NUMBER}).status_code == 403


def _font_or_skip() -> None:
    try:
        find_font()
    except ReceiptFontMissing as e:
        pytest.skip(str(e))


def _pdf_text(data: bytes) -> str:
    if shutil.which("pdftotext"):
        return subprocess.run(["pdftotext", "-layout", "-", "-"], input=data, capture_output=True, check=True).stdout.decode()
    from pypdf import PdfReader

    return "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)


def test_the_pdf_says_the_verdict_and_the_masked_name_and_its_qr_opens_the_verify_page(
    client: TestClient, env: WebEnv
) -> None:
    _font_or_skip()
    import zxingcpp
    from PIL import Image
    from pypdf import PdfReader

    body = issue(client, env).json()
    r = client.get(f"/r/{body['id']}.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = _pdf_text(r.content)
    assert "有效 valid" in text and "张*三" in text and "张小三" not in text
    assert body["id"] in text
    page = PdfReader(io.BytesIO(r.content)).pages[0]
    assert [round(float(x)) for x in page.mediabox.upper_right] == [595, 842]  # A4 in points
    [qr] = [img for img in page.images]
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr.data)))
    assert [d.text for d in decoded] == [body["url"]]
    jwt = client.get(f"/r/{body['id']}.jwt")
    assert jwt.text.strip() == body["token"]


def test_a_missing_font_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReceiptFontMissing) as e:
        find_font(tmp_path / "no-font.ttc")
    from aggregator.errors import describe

    assert "fonts-wqy-microhei" in describe(e.value).text and describe(e.value).status == 503


def test_the_cut_down_font_is_kept_under_the_home_and_reused_by_later_processes(tmp_path: Path, monkeypatch) -> None:
    font = _font_or_skip_path()
    from aggregator.receipts import pdf

    small, _ = pdf.lean_font(font)  # this process's cut (the PDF tests made it): a quick font to cut again
    cache = tmp_path / "home" / "cache" / "fonts"
    built, covers = pdf.lean_font(small, cache)
    assert built.parent == cache and built.is_file() and ord("证") in covers
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".ttf"]  # no temporary file left behind

    monkeypatch.setattr(pdf, "_cut", lambda path: pytest.fail("cut again although the home has it"))
    again, covers_again = pdf.lean_font.__wrapped__(small, cache)  # as a new process: nothing in memory
    assert (again, covers_again) == (built, covers)


def _font_or_skip_path() -> Path:
    try:
        return find_font()
    except ReceiptFontMissing:
        pytest.skip("no CJK font installed")
