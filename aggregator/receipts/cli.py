"""Receipts on the command line.

    certq receipts verify receipt.jwt --jwks https://certq.example/.well-known/jwks.json   (or a saved jwks.json)
    certq receipts show ID [--json]
    certq keys rotate-signing [--out FILE]
    certq lookup NUMBER --receipt            (see aggregator/cli.py)

`verify` works offline with nothing but the receipt and the issuer's key set (a file, or the URL fetched once);
exit 0 when the signature verifies and the receipt has not expired, 1 when it verifies but has expired, 65 when
it does not verify. `show` reads the issuer's own records, so it also says whether a receipt was superseded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from aggregator.errors import describe
from aggregator.receipts import document
from aggregator.receipts.keys import ReceiptSettings, load_signing_key, rotate_signing_key

console = Console()
err_console = Console(stderr=True)
EXIT_OK, EXIT_EXPIRED, EXIT_INVALID = 0, 1, 65


def _fail(e: BaseException) -> None:
    err = describe(e)
    err_console.print(f"[red]{err.text}[/red]")
    sys.exit(err.exit_code)


def read_token(text: str) -> str:
    """A receipt as downloaded: the compact JWS itself, or the API's JSON holding it as `token`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return str(json.loads(text).get("token") or "")
        except (ValueError, AttributeError):
            return ""
    return text


def read_jwks(where: str) -> dict[str, Any]:
    if where.startswith(("http://", "https://")):
        with urllib.request.urlopen(where, timeout=10) as r:  # noqa: S310 - an http(s) URL the user named
            return json.loads(r.read())
    return json.loads(Path(where).read_text(encoding="utf-8"))


def print_check(check: document.ReceiptCheck, *, superseded: str | None = None) -> None:
    subject = check.credential.get("credentialSubject") or {}
    ok = "[green]✓ 签名有效 signature verifies[/green]" if check.signature_ok else f"[red]✕ {check.problem}[/red]"
    console.print(ok + (f"  (key {check.kid})" if check.kid else ""))
    until = check.valid_until.isoformat() if check.valid_until else "?"
    console.print(f"[yellow]! 已过期 expired[/yellow] (valid until {until})" if check.expired
                  else f"[green]✓ 未过期 not expired[/green] (valid until {until})")  # fmt: skip
    if superseded:
        console.print(f"[red]✕ {superseded}[/red]")
    console.print(f"回执 receipt  {check.credential.get('id', '')}")
    console.print(f"结论 verdict  {subject.get('verdict', '')}: {subject.get('verdict_reason', '')}", soft_wrap=False)
    for c in subject.get("certificates") or []:
        console.print(f"  {c.get('number')}  {c.get('holder_name') or ''}  {c.get('effective') or c.get('status')}")


@click.group("receipts")
def receipts_group() -> None:
    """Signed receipts: check one offline, show one from this home's records."""


@receipts_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jwks", "jwks_from", required=True, help="The issuer's key set: a jwks.json file or its URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def receipts_verify(file: Path, jwks_from: str, as_json: bool) -> None:
    """Check a downloaded receipt (FILE: the .jwt, or the API's JSON) with nothing but the issuer's JWKS.

    \b
    Exit codes: 0 verifies and not expired · 1 verifies but expired · 65 does not verify
    """
    try:
        jwks = read_jwks(jwks_from)
    except (OSError, ValueError) as e:
        err_console.print(f"[red]公钥集无法读取 cannot read the key set {jwks_from}: {e}[/red]")
        sys.exit(66)
    check = document.verify(read_token(file.read_text(encoding="utf-8", errors="replace")), jwks)
    if as_json:
        click.echo(json.dumps({"signature_valid": check.signature_ok, "kid": check.kid, "problem": check.problem,
                               "expired": check.expired, "receipt": check.credential}, ensure_ascii=False, indent=2))  # fmt: skip
    else:
        print_check(check)
    sys.exit(EXIT_INVALID if not check.signature_ok else EXIT_EXPIRED if check.expired else EXIT_OK)


@receipts_group.command("show")
@click.argument("receipt_id")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt's JSON.")
@click.option("--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Database URL.")
def receipts_show(receipt_id: str, as_json: bool, database_url: str | None) -> None:
    """Show receipt RECEIPT_ID from this home's records: checked now, expired, superseded."""
    from aggregator.receipts.store import ReceiptStore
    from aggregator.records import RecordStore

    async def run() -> Any:
        records = await RecordStore.open(database_url)
        try:
            store = ReceiptStore(records.engine)
            stored = await store.get(receipt_id)
            return stored, (await store.jwks()) if stored else None
        finally:
            await records.close()

    try:
        stored, jwks = asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - reported through the one table
        _fail(e)
        return
    if stored is None:
        err_console.print(f"[red]未找到回执 no receipt {receipt_id}[/red]")
        sys.exit(66)
    check = document.verify(stored.token, jwks)
    superseded = None
    if stored.superseded_at:
        superseded = f"已被取代 superseded since {stored.superseded_at.isoformat()} ({stored.superseded_status})"
    if as_json:
        click.echo(json.dumps({"id": stored.id, "signature_valid": check.signature_ok, "expired": check.expired,
                               "superseded": superseded, "token": stored.token, "receipt": check.credential},
                              ensure_ascii=False, indent=2))  # fmt: skip
    else:
        print_check(check, superseded=superseded)
    sys.exit(EXIT_INVALID if not check.signature_ok else EXIT_EXPIRED if check.expired or superseded else EXIT_OK)


@click.command("rotate-signing")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the new private key here (required when the key comes from CERTQ_SIGNING_KEY[_FILE]).")
@click.option("--db", "database_url", envvar="CERTQ_DATABASE_URL", help="Database URL.")
def rotate_signing_command(out: Path | None, database_url: str | None) -> None:
    """Make a new receipt signing key; the old public key stays published so old receipts still verify."""
    from aggregator.receipts.store import ReceiptStore
    from aggregator.records import RecordStore

    settings = ReceiptSettings.from_env()
    try:
        new, old = rotate_signing_key(settings, out)

        async def publish() -> None:
            records = await RecordStore.open(database_url)
            try:
                store = ReceiptStore(records.engine)
                if old is not None:
                    await store.publish(old)  # an old key that never signed through this database is kept too
                await store.publish(new)
            finally:
                await records.close()

        asyncio.run(publish())
    except Exception as e:  # noqa: BLE001 - reported through the one table
        _fail(e)
        return
    console.print(f"新签名密钥 new signing key {new.kid}: {new.source}")
    if old is not None:
        console.print(f"旧密钥 old key {old.kid}: retired, still published in /.well-known/jwks.json")
    if out is not None:
        console.print(f"point CERTQ_SIGNING_KEY_FILE at {out} (or put its contents in CERTQ_SIGNING_KEY) and restart")
    else:
        console.print("restart `certq serve` so that it signs with the new key")


def signing_key_status(settings: ReceiptSettings | None = None) -> tuple[str, str, str]:
    """(status, detail, hint) for `certq doctor`."""
    from aggregator.receipts.keys import SigningKeyInvalid, SigningKeyMissing

    settings = settings or ReceiptSettings.from_env()
    try:
        key = load_signing_key(settings)
    except SigningKeyMissing as e:
        return "warn", f"no signing key (looked at {e.looked}): receipts are refused", "certq keys rotate-signing"
    except SigningKeyInvalid as e:
        return "fail", str(e), "fix CERTQ_SIGNING_KEY / CERTQ_SIGNING_KEY_FILE"
    stamp = datetime.now(UTC).date().isoformat()
    return "ok", f"Ed25519 {key.kid} from {key.source} (checked {stamp})", ""
