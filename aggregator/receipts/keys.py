"""Receipt signing keys: Ed25519, the private key outside the database, every public key published for good.

    settings = ReceiptSettings.from_env()                 # where the key is, how long a receipt is valid ...
    key = load_signing_key(settings)                      # SigningKey(kid, key, source); SigningKeyMissing if none
    key = ensure_signing_key(settings)                    # the demo and the tests: make one if there is none
    new, old = rotate_signing_key(settings)               # `certq keys rotate-signing`

Where the private key is, first match wins:

1. `CERTQ_SIGNING_KEY`: the key itself, as a private JWK (JSON) or a PKCS#8 PEM (several instances: the same
   secret in every instance's environment);
2. `CERTQ_SIGNING_KEY_FILE`: a file holding the same;
3. `<home>/signing/signing-key.jwk` (`CERTQ_HOME`, default ./certq-data), made by `certq keys rotate-signing`
   (or `certq demo`), readable by its owner only.

A key named by (1) or (2) that cannot be read or is not an Ed25519 private key is a start-up error
(`SigningKeyInvalid`); no key at all is `SigningKeyMissing` the first time a receipt is needed (issuing one, or
publishing the key set), with the places looked at and the command that makes one.

Key ids are RFC 7638 thumbprints of the public key, so the same key has the same id wherever it is loaded. The
public half of every key that ever signed is kept in the database (`receipts.store.ReceiptStore.publish`) and
served at /.well-known/jwks.json, so a rotated key still verifies the receipts it signed. A rotation in the home
folder also keeps the old public key in `signing/retired/<kid>.public.jwk` and deletes the old private key: a
retired key must never sign again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from pydantic import BaseModel, ConfigDict, Field

from aggregator.errors import register
from aggregator.home import Home

ALGORITHM = "Ed25519"  # RFC 9864's fully specified name (the older "EdDSA" is accepted when verifying)
SIGNING_DIR = "signing"
KEY_FILE = "signing-key.jwk"
FONT_CACHE_DIR = "cache/fonts"  # under the home: the receipt PDF's cut-down font (receipts/pdf.py lean_font)
RETIRED_DIR = "retired"
DEFAULT_VALID_DAYS = 30
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


class SigningKeyMissing(Exception):
    """No receipt signing key is configured."""

    def __init__(self, looked: str) -> None:
        super().__init__(looked)
        self.looked = looked


class SigningKeyInvalid(Exception):
    """A configured signing key cannot be read or is not an Ed25519 private key."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


register(
    SigningKeyMissing, 503, 78, "signing-key-missing",
    "未配置回执签名密钥，无法签发回执（已查找：{exc.looked}；运行 certq keys rotate-signing 生成一个）",
    "no receipt signing key (looked at {exc.looked}); make one with `certq keys rotate-signing`",
)  # fmt: skip
register(
    SigningKeyInvalid, 500, 78, "signing-key-invalid",
    "回执签名密钥无法使用：{exc.where}：{exc.why}", "the receipt signing key cannot be used: {exc.where}: {exc.why}",
)  # fmt: skip


class ReceiptSettings(BaseModel):
    """Where the signing key is and what a receipt says about itself; `from_env` reads the environment."""

    model_config = ConfigDict(frozen=True)

    signing_dir: Path
    key_text: str | None = Field(None, repr=False)  # CERTQ_SIGNING_KEY
    key_file: Path | None = None  # CERTQ_SIGNING_KEY_FILE
    valid_days: int = Field(DEFAULT_VALID_DAYS, ge=1, le=3650)  # CERTQ_RECEIPT_DAYS
    public_url: str | None = None  # CERTQ_PUBLIC_URL: the address people reach the verify pages at
    font_file: Path | None = None  # CERTQ_RECEIPT_FONT: the PDF's CJK font (default: Debian's fonts-wqy-microhei)
    font_cache: Path | None = None  # the home's cache/fonts: the PDF's cut-down font, kept between processes

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, home: Home | None = None) -> ReceiptSettings:
        env = os.environ if environ is None else environ
        root = (home or Home.load(environ=env)).path
        text = env.get("CERTQ_SIGNING_KEY", "").strip() or None
        file = env.get("CERTQ_SIGNING_KEY_FILE", "").strip()
        days = env.get("CERTQ_RECEIPT_DAYS", "").strip()
        font = env.get("CERTQ_RECEIPT_FONT", "").strip()
        return cls(
            signing_dir=root / SIGNING_DIR,
            key_text=text,
            key_file=Path(file).expanduser() if file else None,
            valid_days=int(days) if days.isdigit() else DEFAULT_VALID_DAYS,
            public_url=(env.get("CERTQ_PUBLIC_URL", "").strip().rstrip("/") or None),
            font_file=Path(font).expanduser() if font else None,
            font_cache=root / FONT_CACHE_DIR,
        )

    @property
    def home_key_file(self) -> Path:
        return self.signing_dir / KEY_FILE

    def issuer_url(self, fallback: str | None = None) -> str:
        """The receipts' issuer and the base of their verify URLs: CERTQ_PUBLIC_URL, else the request's, else
        the default address of `certq serve`."""
        return (self.public_url or (fallback or "").rstrip("/") or DEFAULT_PUBLIC_URL).rstrip("/")


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key, its id and where it came from."""

    kid: str
    key: OKPKey
    source: str

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.key)


def public_jwk(key: OKPKey) -> dict[str, Any]:
    """The public half as a JWK with its id, algorithm and use."""
    out = key.as_dict(private=False)
    out.update(kid=key.thumbprint(), alg=ALGORITHM, use="sig")
    return {k: out[k] for k in ("kty", "crv", "x", "kid", "alg", "use")}


def _parse(text: str, where: str) -> SigningKey:
    text = text.strip()
    try:
        if text.startswith("{"):
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JWK object")
            key = OKPKey.import_key(data)
        else:
            key = OKPKey.import_key(text.encode())
    except (ValueError, JoseError, TypeError) as e:
        raise SigningKeyInvalid(where, f"not an Ed25519 private key ({type(e).__name__}: {e})") from None
    if key.as_dict(private=False).get("crv") != "Ed25519":
        raise SigningKeyInvalid(where, "not an Ed25519 key")
    if not key.is_private:
        raise SigningKeyInvalid(where, "a public key cannot sign: give the private key")
    return SigningKey(key.thumbprint(), key, where)


def load_signing_key(settings: ReceiptSettings) -> SigningKey:
    """The key that signs (see the module docstring for where it is looked for)."""
    if settings.key_text:
        return _parse(settings.key_text, "CERTQ_SIGNING_KEY")
    if settings.key_file is not None:
        try:
            return _parse(settings.key_file.read_text(encoding="utf-8"), str(settings.key_file))
        except OSError as e:
            raise SigningKeyInvalid(f"CERTQ_SIGNING_KEY_FILE={settings.key_file}", str(e)) from None
    file = settings.home_key_file
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SigningKeyMissing(f"CERTQ_SIGNING_KEY, CERTQ_SIGNING_KEY_FILE, {file}") from None
    except OSError as e:
        raise SigningKeyInvalid(str(file), str(e)) from None
    return _parse(text, str(file))


def new_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def write_private_key(key: OKPKey, file: Path) -> None:
    """Write a private JWK readable by its owner only (created 0600, never world-readable for a moment)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    data = dict(key.as_dict(private=True), kid=key.thumbprint(), alg=ALGORITHM, use="sig")
    tmp = file.with_name(file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, file)


def ensure_signing_key(settings: ReceiptSettings) -> SigningKey:
    """The configured key, or a new one made in the home folder when none is configured (the demo, tests)."""
    try:
        return load_signing_key(settings)
    except SigningKeyMissing:
        key = new_key()
        write_private_key(key, settings.home_key_file)
        return SigningKey(key.thumbprint(), key, str(settings.home_key_file))


def rotate_signing_key(settings: ReceiptSettings, out: Path | None = None) -> tuple[SigningKey, SigningKey | None]:
    """A new key, written to `out` or (the default) the home's key file, and the key it replaces (None if there
    was none). In the home folder the old public key is kept under `retired/` and its private key deleted; a key
    given by CERTQ_SIGNING_KEY(_FILE) is the operator's to replace, so the new one goes to `out` (required)."""
    try:
        old: SigningKey | None = load_signing_key(settings)
    except SigningKeyMissing:
        old = None
    from_env = settings.key_text is not None or settings.key_file is not None
    if out is None and from_env:
        raise SigningKeyInvalid(
            "CERTQ_SIGNING_KEY" if settings.key_text else f"CERTQ_SIGNING_KEY_FILE={settings.key_file}",
            "the key comes from the environment: write the new one with --out FILE and point the setting at it",
        )
    key = new_key()
    target = out or settings.home_key_file
    if old is not None and out is None:
        retired = settings.signing_dir / RETIRED_DIR / f"{old.kid}.public.jwk"
        retired.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        retired.write_text(json.dumps({**old.public_jwk(), "retired_at": stamp}, indent=2) + "\n", encoding="utf-8")
    write_private_key(key, target)  # replaces the old private key file in place
    return SigningKey(key.thumbprint(), key, str(target)), old
