"""The holder's view in the API.

    POST /api/v1/holder/lookups     anyone; {number, name, id_number} -> who looked up the holder's certificates
                                    (JSON, or CSV with ?format=csv or Accept: text/csv)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.web.access import client_address, parse_json, services
from aggregator.web.endpoint import Body, Choice, Reply, endpoint
from aggregator.web.holders import HolderLocked, HolderNotVerified
from aggregator.web.problems import BadRequest, UnsupportedMediaType

NO_STORE = {"Cache-Control": "no-store"}
FORMAT = Choice("format", "csv or json (default: by Accept)", choices=("csv", "json"))


class HolderProof(BaseModel):
    """What proves a holder holds a certificate: all three, exactly as on the certificate and ID card."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(max_length=64, description="证书编号 The certificate number")
    name: str = Field(max_length=64, description="持证人姓名 The holder's full name")
    id_number: str = Field(max_length=64, description="身份证号 The holder's full ID number")


class HolderLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: str = Field(description="When (UTC, ISO 8601)")
    organisation: str = Field(description="The organisation: its key's label")
    role: str
    purpose: str | None
    action: str = Field(description="lookup | verification | ...")
    number: str = Field(description="The number looked up")
    verdict: str | None


class PublicDay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: str = Field(description="UTC day, YYYY-MM-DD")
    count: int


class HolderLookups(BaseModel):
    """Who looked up the holder's certificates: organisations with a key one by one, the public as counts."""

    model_config = ConfigDict(extra="forbid")

    number: str
    numbers: list[str] = Field(description="The holder's certificate numbers (and ID number) covered")
    generated_at: str | None
    lookups: list[HolderLookup]
    public_lookups_per_day: list[PublicDay]


def _wants_csv(request: Request) -> bool:
    fmt = FORMAT.read(request)
    return fmt == "csv" if fmt else "text/csv" in request.headers.get("accept", "")


@endpoint(
    "POST",
    "/api/v1/holder/lookups",
    name="api_holder_lookups",
    operation_id="holderLookups",
    reply=Reply.json(HolderLookups, "The lookups of the holder's certificates", text_csv=str),
    params=(FORMAT,),
    body=Body({"application/json": HolderProof}, example={"number": "T110105199003071239", "name": "张小三",
                                                          "id_number": "110105199003071239"}),
    raises=(BadRequest, UnsupportedMediaType, HolderNotVerified, HolderLocked),
)
async def post_holder_lookups(request: Request) -> Response:
    """持证人查询记录 Who looked up my certificates (PIPL art. 44-45).

    Give the certificate number, your full name and your full ID number: when all three match one certificate,
    the answer lists every lookup of your certificates by an organisation with a key (organisation, role,
    purpose, time, verdict) and anonymous public lookups as counts per day. Any mismatch gets the same 403,
    whichever detail was wrong; too many attempts from one address or on one certificate lock them out (429).
    """
    data = parse_json(await request.body(), request.headers.get("content-type", ""))
    try:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        proof = [data.get(k) for k in ("number", "name", "id_number")]
        if not all(isinstance(v, str) for v in proof):
            raise ValueError("number, name and id_number are required strings")
    except ValueError as e:
        raise BadRequest("请求体应为 JSON：number、name、id_number", f"the body must be JSON with number, name, id_number: {e}")
    report = await services(request).holders.report(client_address(request), *proof)
    if _wants_csv(request):
        return Response(
            report.as_csv(),
            media_type="text/csv; charset=utf-8",
            headers={**NO_STORE, "Content-Disposition": 'attachment; filename="certq-my-lookups.csv"'},
        )
    return JSONResponse(report.as_json(), headers=NO_STORE)


def holder_routes() -> list[Route]:
    return [post_holder_lookups.route()]
