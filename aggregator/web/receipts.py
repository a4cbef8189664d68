"""Signed receipts over HTTP: issue one, read one, the public keys, and the verify page, PDF and download.

    POST /api/v1/receipts                  anyone; {number, name?, id_number?, purpose?} -> 201, the receipt
    GET  /api/v1/receipts/{receipt_id}     anyone holding the id; ?check=now adds a fresh lookup and what changed
    GET  /.well-known/jwks.json            every public key that ever signed a receipt (old ones too)
    GET  /r/{receipt_id}                   the verify page (pages/receipt.py); .pdf the PDF, .jwt the signed file
    POST /receipts                         the lookup page's button (pages/receipt.py)

A receipt holds what the role that asked may see (the lookup is `Services.lookup_for`'s: purpose, name budget,
audit, masking), with the holder's name in full only where the caller supplied it and it matched. Its id is
unguessable (128 random bits) and is what lets one read it: whoever was given the receipt (or its QR code) may
check it, and sees no more than what was handed to them. The issuer's address in the receipt (its `id`, the QR
code) is CERTQ_PUBLIC_URL when set, else the address the request came in on: set it behind a proxy.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aggregator.numbers import NumberError
from aggregator.receipts.keys import SigningKeyMissing
from aggregator.web.access import caller, client_address, parse_json, services, validate_json
from aggregator.web.endpoint import PURPOSE, Body, Choice, Reply, endpoint, path_param
from aggregator.web.problems import (
    AuditUnavailable,
    BadRequest,
    PurposeRequired,
    RouteNotFound,
    Unprocessable,
    UnsupportedMediaType,
)
from aggregator.web.roles import Role
from aggregator.web.schemas import IsoTime
from aggregator.web.services.receipts import ReceiptState

NO_STORE = {"Cache-Control": "no-store"}
_CLOSED = ConfigDict(extra="forbid")
MAX_PARAM = 64
MAX_ID = 32


# --- the shapes -------------------------------------------------------------------------------------------


class ReceiptRequest(BaseModel):
    """What to issue a receipt for: the lookup's number and, optionally, the holder's name (checked; shown in
    the receipt in full only if it matches), ID number and purpose (required for regulators)."""

    model_config = _CLOSED

    number: str = Field(min_length=1, max_length=MAX_PARAM, description="证书编号 or 身份证号")
    name: str | None = Field(None, max_length=MAX_PARAM, description="持证人姓名: checked against the records")
    id_number: str | None = Field(None, max_length=MAX_PARAM, description="持证人身份证号")
    purpose: str | None = Field(None, max_length=500, description="用途 (regulators must state one)")


class ReceiptSignature(BaseModel):
    """Whether the receipt's signature verifies against the published keys, now."""

    model_config = _CLOSED

    valid: bool
    kid: str | None = Field(description="The signing key's id (in /.well-known/jwks.json)")
    problem: str | None = Field(description="Why it does not verify (Chinese, then English); null when valid")


class ReceiptSuperseded(BaseModel):
    """A later lookup found a certificate of the receipt suspended or revoked."""

    model_config = _CLOSED

    at: IsoTime
    status: str | None = Field(description="What the later lookup found: suspended or revoked")


class CheckAgain(BaseModel):
    """The same number looked up now, as the caller may (without the name), and what changed since."""

    model_config = _CLOSED

    checked_at: IsoTime
    verdict: str
    verdict_reason: str
    complete: bool
    changed: bool
    changes: list[str] = Field(description="Each change in words (Chinese, then English)")
    notes: list[str]


class ReceiptView(BaseModel):
    """A receipt, its signed document and what checking it now finds."""

    model_config = _CLOSED

    id: str
    url: str = Field(description="The verify page (also the credential's id and the PDF's QR code)")
    pdf: str
    token: str = Field(description="The signed receipt: a compact JWS (vc+jwt), verifiable with the JWKS alone")
    media_type: str
    issued_at: IsoTime
    valid_until: IsoTime
    role: Role = Field(description="Whose view of the answer the receipt holds")
    signature: ReceiptSignature
    expired: bool
    superseded: ReceiptSuperseded | None
    receipt: dict[str, Any] = Field(description="The credential (W3C VC 2.0): the payload of `token`")
    check_again: CheckAgain | None = Field(None, description="With ?check=now")


# --- the API ------------------------------------------------------------------------------------------------

RECEIPT_ID = path_param("receipt_id", "回执编号 The receipt's id", type="string", minLength=1, maxLength=MAX_ID)
CHECK = Choice("check", "now: look the number up again and say what changed since the receipt", choices=("now",))


def _read_request(body: bytes, content_type: str) -> ReceiptRequest:
    return validate_json(parse_json(body, content_type), ReceiptRequest)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def find_receipt(request: Request, receipt_id: str) -> ReceiptState:
    """The receipt with this id, or `RouteNotFound`."""
    state = await services(request).receipts.find(receipt_id) if len(receipt_id) <= MAX_ID else None
    if state is None:
        raise RouteNotFound(f"回执 receipt {receipt_id[:MAX_ID]}")
    return state


@endpoint(
    "POST",
    "/api/v1/receipts",
    name="api_receipts",
    operation_id="issueReceipt",
    reply=Reply.json(ReceiptView, "The receipt issued", status=201),
    params=(PURPOSE,),
    body=Body({"application/json": ReceiptRequest}, example={"number": "T110105199003071239", "name": "张伟"}),
    raises=(BadRequest, Unprocessable, UnsupportedMediaType, PurposeRequired, NumberError, AuditUnavailable,
            SigningKeyMissing),  # fmt: skip
)
async def post_receipt(request: Request) -> Response:
    """签发核验回执 Issue a signed receipt of a lookup.

    Looks the number up exactly as GET /api/v1/certificates/{number} does for the caller (purpose, name budget,
    audit, masking) and signs what the caller may see: verdict, certificates, every source's outcome and data
    date, recognitions. The holder's name is masked unless the caller supplied it and it matched. Valid for 30
    days by default (CERTQ_RECEIPT_DAYS). The answer's `url` is the verify page, `pdf` the printable receipt,
    `token` the signed document (W3C VC 2.0 as a compact JWS), verifiable offline with /.well-known/jwks.json.
    """
    req = _read_request(await request.body(), request.headers.get("content-type", ""))
    state = await services(request).receipts.issue(
        caller(request),
        req.number,
        name=req.name,
        id_number=req.id_number,
        purpose=PURPOSE.read(request, req.purpose),
        client_ip=client_address(request),
        base_url=base_url(request),
    )
    return JSONResponse(state.as_json(), status_code=201, headers={**NO_STORE, "Location": state.url})


@endpoint(
    "GET",
    "/api/v1/receipts/{receipt_id}",
    name="api_receipt",
    operation_id="getReceipt",
    reply=Reply.json(ReceiptView, "The receipt and what checking it now finds"),
    params=(RECEIPT_ID, CHECK),
    raises=(Unprocessable, AuditUnavailable),
)
async def get_receipt(request: Request) -> Response:
    """核验回执 A receipt: its signature checked now, expired or not, superseded or not.

    Whoever holds a receipt's id may read it (it shows what its issuer was shown). `superseded` says since when
    a later lookup found one of its certificates suspended or revoked. With ?check=now the number is looked up
    again, as the caller may, and `check_again` says what changed since.
    """
    state = await find_receipt(request, request.path_params["receipt_id"])
    body = state.as_json()
    if CHECK.read(request) == "now":
        svc = services(request).receipts
        body["check_again"] = await svc.check_again(caller(request), state, client_ip=client_address(request))
        refreshed = await svc.find(state.stored.id)  # the fresh lookup may have superseded it
        body.update(superseded=(refreshed or state).as_json()["superseded"])
    return JSONResponse(body, headers=NO_STORE)


async def jwks(request: Request) -> Response:
    """GET /.well-known/jwks.json: every public key that ever signed a receipt."""
    keys = await services(request).receipts.jwks()
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"}, media_type="application/jwk-set+json")


def receipt_routes() -> list[BaseRoute]:
    """The receipts' API endpoints, the key set and the pages; the app mounts them before the other pages."""
    from aggregator.web.pages import receipt

    return [
        post_receipt.route(),
        get_receipt.route(),
        Route("/.well-known/jwks.json", jwks, methods=["GET"], name="jwks"),
        *receipt.routes,
    ]

