"""Signed receipts: an answer, as the role that asked may see it, signed so that anyone can check it later.

    keys.py       the Ed25519 signing key (outside the database), rotation, ReceiptSettings
    document.py   the receipt document: build, sign, verify offline against a JWKS
    store.py      receipts, the certificates each shows, and every public key, in the records database;
                  `supersede`, the hook every lookup passes through
    pdf.py        the A4 PDF with a QR code that opens the verify page
    cli.py        `certq receipts verify FILE --jwks FILE|URL`, `certq receipts show ID`,
                  `certq keys rotate-signing`

The format: a W3C Verifiable Credential 2.0 secured with JOSE (`application/vc+jwt`: a compact JWS whose payload
is the credential), rather than a bare JWS with ad-hoc claims. It costs nothing extra to check: it is still
one compact JWS, which `certq receipts verify`, joserfc or any JOSE library verifies with nothing but the
issuer's JWKS; and it says what it is in a vocabulary others already read: the issuer, `validFrom` /
`validUntil`, the subject, an `id` that is the verify page. Courts, insurers and wallets that take VCs can
take a receipt as it is; the Data Integrity proofs (JSON-LD canonicalisation) were left out on purpose, since
they would need a canonicaliser on every verifier for no gain in what is proven.

Whether a receipt has been superseded (a later lookup found the certificate suspended or revoked) is not in the
signed document, which cannot change; the issuer keeps it, and the verify page says so and since when.

This package sits below the web layer: it imports models, records and the gateway's types, never `web`. The web
service layer (`web/services/receipts.py`) passes it the masked view of an answer.
"""

from aggregator.receipts.document import ReceiptCheck, credential, sign, verify
from aggregator.receipts.keys import ReceiptSettings, SigningKey, SigningKeyInvalid, SigningKeyMissing
from aggregator.receipts.store import ReceiptStore, StoredReceipt

__all__ = [
    "ReceiptCheck",
    "ReceiptSettings",
    "ReceiptStore",
    "SigningKey",
    "SigningKeyInvalid",
    "SigningKeyMissing",
    "StoredReceipt",
    "credential",
    "sign",
    "verify",
]
