"""The API description: /openapi.json (OpenAPI 3.1, schemas from the pydantic models) and /docs, a
self-contained page (no CDN, no script) listing every endpoint with its parameters, an example request and
the problem types.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from aggregator.config import RecognitionCatalogue
from aggregator.errors import registered
from aggregator.models import Answer
from aggregator.records.report import BatchReport, BatchSummary
from aggregator.web.batch import VerificationRequest

REF = "#/components/schemas/{model}"
BEARER = [{"bearerAuth": []}]
OPTIONAL_BEARER: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
API_VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# On every response to a rate-limited request (IETF draft httpapi-ratelimit-headers).
RATELIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Limit": {"description": "Requests (batch pairs) allowed per window", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "What is left of the window", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the window rolls over (429: until a retry fits)",
                        "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": "<limit>;w=60", "schema": {"type": "string"}},
}


def _problems(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad request (e.g. a regulator without a purpose)",
        401: "No key, or an unknown or revoked key",
        403: "The key's role may not do this",
        404: "Not found",
        409: "Already imported",
        413: "Body or upload too large",
        415: "Unsupported content type",
        422: "Invalid input (the problem says why)",
        429: "Rate limited (see Retry-After and the RateLimit-* headers)",
        503: "A dependency is not available",
    }
    out: dict[str, Any] = {
        str(s): {"description": text[s], "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for s in statuses
    }
    if "429" in out:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}, **RATELIMIT_HEADERS}
    return out


def _param(name: str, where: str, description: str, *, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": {"type": "string", **schema},
    }


_PURPOSE_PARAMS = [
    _param("purpose", "query", "用途 Why the lookup is made (required for regulators)", maxLength=500),
    _param("X-Purpose", "header", "用途, as a header (UTF-8, may be percent-encoded); wins over ?purpose=",
           maxLength=500),
]

_HAND_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem document, with the message in Chinese and English.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "detail_zh": {"type": "string"},
            "detail_en": {"type": "string"},
        },
    },
    "LookupView": {
        "description": "The merged answer as the caller's role may see it: for the public, employers and "
        "departments names are masked (张*三), ID numbers and gender left out; employers also get name_matches.",
        "allOf": [
            _ref("Answer"),
            {
                "type": "object",
                "required": ["view"],
                "properties": {
                    "view": {
                        "type": "object",
                        "properties": {"role": {"type": "string"}, "masked": {"type": "boolean"}},
                    },
                    "name_matches": {"type": ["boolean", "null"]},
                },
            },
        ],
    },
    "VerificationResult": {
        "type": "object",
        "required": ["count", "summary", "results"],
        "properties": {
            "count": {"type": "integer"},
            "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "row": {"type": "integer"},
                        "number": {"type": "string"},
                        "name_given": {"type": "boolean"},
                        "verdict": {"type": ["string", "null"]},
                        "name_matches": {"type": ["boolean", "null"]},
                        "name_check": {
                            "description": "checked, or not_checked (the daily budget of names tried against "
                            "this certificate is spent: looked up without the name); null without a name",
                            "anyOf": [_ref("NameCheck"), {"type": "null"}],
                        },
                        "answer": {"anyOf": [_ref("LookupView"), {"type": "null"}]},
                        "error": {"type": ["object", "null"]},
                    },
                },
            },
        },
    },
    "Sources": {
        "type": "object",
        "properties": {
            "sources": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "department": {"type": "string"},
                        "mode": {"type": "string"},
                        "enabled": {"type": "boolean"},
                        "circuit": {"type": ["object", "null"]},
                        "calls": {"type": "integer"},
                        "success_rate": {"type": ["number", "null"]},
                        "p50_ms": {"type": ["number", "null"]},
                        "p95_ms": {"type": ["number", "null"]},
                        "last_error": {"type": ["object", "null"]},
                        "records": {"type": ["object", "null"]},
                    },
                },
            }
        },
    },
    "AuditEntries": {
        "type": "object",
        "properties": {
            "entries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "at": {"type": "string", "format": "date-time"},
                        "key_id": {"type": "string"},
                        "role": {"type": "string"},
                        "action": {"type": "string"},
                        "purpose": {"type": ["string", "null"]},
                        "number": {"type": "string"},
                        "name_given": {"type": "boolean"},
                        "id_number_given": {"type": "boolean"},
                        "verdict": {"type": ["string", "null"]},
                        "client_ip": {"type": ["string", "null"]},
                        "name_check": {
                            "description": "match, mismatch, unknown (nothing to compare), not_checked (the "
                            "daily name budget was spent); null when no name was given",
                            "type": ["string", "null"],
                        },
                    },
                },
            }
        },
    },
    "Uploads": {
        "type": "object",
        "properties": {
            "batches": {"type": "array", "items": _ref("BatchSummary")},
            "current": {"type": "object", "additionalProperties": _ref("BatchSummary")},
        },
    },
    "WhoAmI": {
        "type": "object",
        "properties": {
            "role": {"type": "string", "enum": ["public", "employer", "regulator", "department", "admin"]},
            "key_id": {"type": ["string", "null"]},
            "label": {"type": ["string", "null"]},
            "department": {"type": ["string", "null"]},
        },
    },
    "UploadForm": {
        "type": "object",
        "required": ["file", "quarter"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "CSV, XLSX or XLS"},
            "quarter": {"type": "string", "pattern": "^[0-9]{4}Q[1-4]$", "examples": ["2026Q1"]},
            "department": {"type": "string", "enum": ["mem", "mohurd", "samr", "mohrss"]},
            "partial": {"type": "string", "enum": ["true", "false"]},
        },
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}, "checks": {"type": "object"}}},
}


def _paths() -> dict[str, Any]:
    lookup_params = [
        _param("number", "path", "证书编号 or 身份证号 (as printed: spaces, dashes and full-width digits are fine)",
               required=True, minLength=1, maxLength=64),
        _param("name", "query", "持证人姓名: checked against the records", maxLength=64),
        _param("id_number", "query", "持证人身份证号, for sources queried by ID number", maxLength=64),
        *_PURPOSE_PARAMS,
    ]
    return {
        "/api/v1/certificates/{number}": {
            "get": {
                "operationId": "getCertificate",
                "summary": "Look a certificate up (一网查询)",
                "description": "Asks every source that could hold the number and merges what they say: verdict, "
                "certificates, every source's outcome and freshness, conflicts, recognitions. Anyone may ask; "
                "what is shown depends on the role. Lookups with a key are audited. Names are a limited "
                "resource: a caller (key; the public: client IP) may have 5 distinct names (by default) checked "
                "against one certificate per UTC day; beyond that the lookup is made without the name and "
                "query.name_check is not_checked.",
                "security": OPTIONAL_BEARER,
                "parameters": lookup_params,
                "responses": {
                    "200": _json(_ref("LookupView"), "The answer"),
                    **_problems(400, 401, 404, 422, 429, 503),
                },
            }
        },
        "/api/v1/verifications": {
            "post": {
                "operationId": "verifyBatch",
                "summary": "Verify up to 1,000 {number, name} pairs (employer, regulator, admin)",
                "description": "JSON {pairs:[{number,name}]} or CSV (text/csv body, or a multipart file "
                "field `file`) with columns number,name[,id_number]. Answers JSON, or CSV with "
                "`Accept: text/csv` or `?format=csv` (cells that could run as spreadsheet formulas get a "
                "leading '). Every pair is answered even if another fails. N pairs cost N of the key's "
                "per-minute rate limit (a batch that does not fit is a 429 before anything is looked up); "
                "names beyond the daily per-certificate budget are not checked (name_check: not_checked).",
                "security": BEARER,
                "parameters": [
                    _param("format", "query", "csv or json (default: by Accept)", enum=["csv", "json"]),
                    *_PURPOSE_PARAMS,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("VerificationRequest")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "One result per pair",
                        "content": {
                            "application/json": {"schema": _ref("VerificationResult")},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_problems(400, 401, 403, 413, 415, 422, 429, 503),
                },
            }
        },
        "/api/v1/uploads": {
            "post": {
                "operationId": "uploadRecords",
                "summary": "Upload a department's quarterly records file (department key: its own only)",
                "description": "Streamed to disk (upload size limit enforced while streaming), imported as "
                "`certq import` does: by default a file with any invalid row is rejected whole (422 with the "
                "report); partial=true imports the valid rows. The same file twice is 409.",
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("UploadForm")}},
                },
                "responses": {
                    "201": _json(_ref("BatchReport"), "Imported; the batch report"),
                    **_problems(400, 401, 403, 409, 413, 422, 429),
                },
            },
            "get": {
                "operationId": "listUploads",
                "summary": "Recent uploads (department: its own; regulator, admin: all)",
                "security": BEARER,
                "parameters": [_param("department", "query", "Only this department",
                                      enum=["mem", "mohurd", "samr", "mohrss"])],
                "responses": {"200": _json(_ref("Uploads"), "Uploads"), **_problems(401, 403, 422, 429)},
            },
        },
        "/api/v1/uploads/{batch_id}": {
            "get": {
                "operationId": "getUpload",
                "summary": "One upload's full report (department: its own only)",
                "security": BEARER,
                "parameters": [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": _json(_ref("BatchReport"), "The report"), **_problems(401, 403, 404, 429)},
            }
        },
        "/api/v1/sources": {
            "get": {
                "operationId": "getSources",
                "summary": "Every source's health: mode, circuit, success rate, p50/p95, last error, newest upload",
                "security": OPTIONAL_BEARER,
                "responses": {"200": _json(_ref("Sources"), "Sources"), **_problems(401, 429)},
            }
        },
        "/api/v1/recognition": {
            "get": {
                "operationId": "getRecognition",
                "summary": "The mutual-recognition catalogue (对应目录)",
                "security": OPTIONAL_BEARER,
                "responses": {"200": _json(_ref("RecognitionCatalogue"), "Catalogue"), **_problems(401, 429)},
            }
        },
        "/api/v1/audit": {
            "get": {
                "operationId": "getAudit",
                "summary": "The audit log, newest first (regulator, admin)",
                "security": BEARER,
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    _param("key_id", "query", "Only this key's lookups", maxLength=32),
                ],
                "responses": {"200": _json(_ref("AuditEntries"), "Entries"), **_problems(401, 403, 422, 429)},
            }
        },
        "/api/v1/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "The role this request acts as",
                "security": OPTIONAL_BEARER,
                "responses": {"200": _json(_ref("WhoAmI"), "The caller"), **_problems(401, 429)},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process is up",
                "responses": {"200": _json(_ref("Status"), "Up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The records store and Redis (when configured) answer",
                "responses": {"200": _json(_ref("Status"), "Ready"), **_problems(503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "Text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                },
            }
        },
    }


@lru_cache(maxsize=1)
def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of API v1."""
    _, defs = models_json_schema(
        [
            (Answer, "serialization"),
            (VerificationRequest, "validation"),
            (BatchReport, "serialization"),
            (BatchSummary, "serialization"),
            (RecognitionCatalogue, "serialization"),
        ],
        ref_template=REF,
    )
    schemas = {**defs["$defs"], **_HAND_SCHEMAS}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "certq API",
            "version": API_VERSION,
            "description": "职业技能证书一网查询: one lookup over every department source, merged. Errors are RFC "
            "9457 problem documents with the message in Chinese and English. Keys: `Authorization: Bearer "
            "<key>` (from `certq keys create`).",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "certq API key"}},
        },
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_spec())


# --- the docs page -------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;max-width:960px;margin:0 auto;padding:1rem;
line-height:1.5;color:#1a1a1a}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f4f4f4;padding:.6rem;overflow-x:auto;border-radius:4px}table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}
h3 code{overflow-wrap:anywhere}
.m{display:inline-block;min-width:3.5rem;font-weight:bold}section{border-top:1px solid #ccc;margin-top:1.5rem}
"""


def _example(method: str, path: str, op: dict[str, Any]) -> str:
    url = "http://127.0.0.1:8000" + path.replace("{number}", "T110105199003071239").replace("{batch_id}", "1")
    lines = [f"curl -sS -X {method.upper()}"]
    if op.get("security") == BEARER:
        lines.append('  -H "Authorization: Bearer $CERTQ_KEY"')
    if path == "/api/v1/certificates/{number}":
        url += "?name=%E5%BC%A0%E4%BC%9F"
    elif path == "/api/v1/verifications":
        lines.append("  -H 'Content-Type: application/json'")
        lines.append("""  -d '{"pairs":[{"number":"T110105199003071239","name":"张伟"}]}'""")
    elif path == "/api/v1/uploads" and method == "post":
        lines.append("  -F file=@mem-2026Q1.csv -F quarter=2026Q1")
    lines.append(f"  '{url}'")
    return " \\\n".join(lines)


def docs_html() -> str:
    spec = openapi_spec()
    e = html.escape
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>certq API 文档</title><style>{_CSS}</style></head><body>",
        f"<h1>certq API v{e(spec['info']['version'])}</h1><p>{e(spec['info']['description'])}</p>",
        "<p>机器可读描述 Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p>",
        "<h2>角色 Roles</h2><table><tr><th>role</th><th>may</th></tr>",
        "<tr><td>public (no key)</td><td>look up (masked: 张*三, no ID number), sources, recognition</td></tr>",
        "<tr><td>employer</td><td>as public, plus name_matches (within the daily budget of names per "
        "certificate) and batch verification (N pairs cost N of the key's rate limit)</td></tr>",
        "<tr><td>regulator</td><td>full records and conflicts (a purpose is required), batch, the audit log, "
        "upload reports</td></tr>",
        "<tr><td>department</td><td>as public, plus uploading and reading its own department's records</td></tr>",
        "<tr><td>admin</td><td>everything</td></tr></table>",
        "<h2>接口 Endpoints</h2>",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(f"<section id='{e(op['operationId'])}'><h3><span class='m'>{e(method.upper())}</span>"
                         f"<code>{e(path)}</code></h3><p><b>{e(op['summary'])}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>")
                for p in params:
                    parts.append(
                        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{e(p.get('description', ''))}</td></tr>"
                    )
                parts.append("</table>")
            statuses = ", ".join(op["responses"])
            parts.append(f"<p>Responses: {e(statuses)}</p><pre>{e(_example(method, path, op))}</pre></section>")
    parts.append("<h2 id='problems'>错误类型 Problem types</h2><table><tr><th>type</th><th>status</th>"
                 "<th>中文</th><th>English</th></tr>")
    for title, status, zh, en in registered():
        parts.append(f"<tr id='problem-{e(title)}'><td><code>{e(title)}</code></td><td>{status}</td>"
                     f"<td>{e(zh)}</td><td>{e(en)}</td></tr>")
    parts.append("</table><h2>示例答复 Example answer</h2><pre>")
    parts.append(e(json.dumps({"verdict": "valid", "certificates": [{"holder_name": "张*三"}], "view": {
        "role": "public", "masked": True}}, ensure_ascii=False, indent=2)))
    parts.append("</pre></body></html>")
    return "".join(parts)


async def docs_page(request: Request) -> Response:
    return HTMLResponse(docs_html())


def openapi_routes() -> list[Route]:
    return [
        Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
        Route("/docs", docs_page, methods=["GET"], name="docs"),
    ]
