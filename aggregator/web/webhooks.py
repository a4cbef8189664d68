"""An organisation's webhooks over HTTP: endpoints, their secrets, the delivery log and replays.

    POST   /api/v1/webhooks                                   {url, event_types?, description?} -> 201 + secret
    GET    /api/v1/webhooks                                   the organisation's endpoints (never a secret)
    GET    /api/v1/webhooks/{webhook_id}
    PATCH  /api/v1/webhooks/{webhook_id}                      {url?, event_types?, description?, enabled?}
    DELETE /api/v1/webhooks/{webhook_id}
    POST   /api/v1/webhooks/{webhook_id}/rotate-secret        -> the new secret, shown this once
    GET    /api/v1/webhooks/{webhook_id}/deliveries           ?limit=&before= : attempts, status codes, latency
    POST   /api/v1/webhooks/deliveries/{delivery_id}/replay   the same message (webhook-id) sent again

Employer and admin keys (`roles.ROSTER_KEEPERS`), each as its organisation: another organisation's endpoint or
delivery is a 404. Deliveries follow Standard Webhooks (see aggregator/rosters/webhooks.py).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.audit import AuditUnavailable
from aggregator.records.schema import EVENT_TYPES
from aggregator.rosters.webhook_store import Delivery, Endpoint
from aggregator.rosters.webhook_urls import MAX_URL, UnsafeWebhookUrl
from aggregator.web.access import caller, read_json, services
from aggregator.web.endpoint import Access, Body, Integer, Reply, endpoint, path_param
from aggregator.web.problems import BadRequest, RouteNotFound, Unprocessable, UnsupportedMediaType
from aggregator.web.roles import ROSTER_KEEPERS

KEEP = Access.only(ROSTER_KEEPERS, "回调 / webhooks")
NO_STORE = {"Cache-Control": "no-store"}
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


# --- what goes in and out ------------------------------------------------------------------------------------


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookCreate(_Closed):
    """A new endpoint: where to send, which event types (none: all)."""

    url: str = Field(min_length=1, max_length=MAX_URL, description="http(s) URL; internal addresses are refused")
    event_types: list[EventType] = Field(default_factory=list, description="Only these types; empty: every type")
    description: str | None = Field(None, max_length=200)


class WebhookPatch(_Closed):
    """What to change; enabled=true re-enables a disabled endpoint (events since then are delivered)."""

    url: str | None = Field(None, min_length=1, max_length=MAX_URL)
    event_types: list[EventType] | None = None
    description: str | None = Field(None, max_length=200)
    enabled: bool | None = None


class WebhookOut(_Closed):
    id: str
    url: str
    description: str | None
    event_types: list[str] = Field(description="Empty: every type")
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled (410 Gone, failing for days, its owner)")
    disabled_at: str | None
    created_at: str
    updated_at: str
    previous_secret_until: str | None = Field(description="After a rotation, the old secret also signs until then")


class WebhookCreated(WebhookOut):
    """The endpoint and its signing secret, shown this once (Standard Webhooks: whsec_...)."""

    secret: str = Field(description="whsec_<base64>: verify deliveries with it; it is not shown again")


class WebhookList(_Closed):
    webhooks: list[WebhookOut]


class WebhookDeleted(_Closed):
    id: str
    deleted: bool


class AttemptOut(_Closed):
    attempt: int
    at: str
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer (see error)")
    latency_ms: int | None
    error: str | None
    next_attempt_at: str | None


class DeliveryOut(_Closed):
    id: int = Field(description="Replay it with POST /api/v1/webhooks/deliveries/{id}/replay")
    webhook_id: str = Field(description="The webhook-id header: the same on every retry and replay")
    endpoint_id: str
    event_id: int | None
    event_type: str
    status: Literal["pending", "sending", "delivered", "failed"]
    attempts: int
    created_at: str
    next_attempt_at: str | None
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    delivered_at: str | None
    replay_of: int | None
    payload: dict[str, Any] = Field(description="The body sent")
    log: list[AttemptOut]


class DeliveryList(_Closed):
    deliveries: list[DeliveryOut]
    next_before: int | None = Field(description="Pass as ?before= for older deliveries; null: no more")


# --- parameters ----------------------------------------------------------------------------------------------

WEBHOOK_ID = path_param("webhook_id", "The endpoint's id", type="string", minLength=1, maxLength=64)
DELIVERY_ID = path_param("delivery_id", "The delivery's id", type="integer", minimum=1)
LIMIT = Integer("limit", "Deliveries a page", default=50, minimum=1, maximum=200)
BEFORE = Integer("before", "Deliveries older than this id", default=0, minimum=0, maximum=2**53)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def endpoint_json(e: Endpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "event_types": e.event_types,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "disabled_at": _iso(e.disabled_at),
        "created_at": _iso(e.created_at),
        "updated_at": _iso(e.updated_at),
        "previous_secret_until": _iso(e.rotating_until),
    }


def delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "webhook_id": d.msg_id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "created_at": _iso(d.created_at),
        "next_attempt_at": _iso(d.next_attempt_at),
        "last_status_code": d.last_status_code,
        "last_latency_ms": d.last_latency_ms,
        "last_error": d.last_error,
        "delivered_at": _iso(d.delivered_at),
        "replay_of": d.replay_of,
        "payload": json.loads(d.payload),
        "log": [
            {
                "attempt": a.attempt,
                "at": _iso(a.at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
                "next_attempt_at": _iso(a.next_attempt_at),
            }
            for a in d.log
        ],
    }




def _webhook_id(request: Request) -> str:
    return str(request.path_params["webhook_id"])


CHANGES = (BadRequest, Unprocessable, UnsupportedMediaType, UnsafeWebhookUrl, AuditUnavailable)
EXAMPLE = {"url": "https://hr.example.com/certq/webhook", "event_types": ["status_changed", "expiry_approaching"]}


# --- endpoints -----------------------------------------------------------------------------------------------


@endpoint(
    "POST",
    "/api/v1/webhooks",
    name="api_webhooks_create",
    operation_id="createWebhook",
    reply=Reply(201, {"application/json": WebhookCreated}, "Created", headers={"Location": "/api/v1/webhooks/{id}"}),
    access=KEEP,
    body=Body({"application/json": WebhookCreate}, example=EXAMPLE),
    raises=CHANGES,
)
async def create_webhook(request: Request) -> Response:
    """登记回调地址 Register a webhook endpoint (employer); its secret is shown this once.

    The organisation's events from now on (roster status changes, expiry warnings ... and webhook_disabled) are
    POSTed to the URL, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) with the
    secret returned here. A URL whose host resolves to a loopback, private, link-local or metadata address is
    refused unless the operator allows it (CERTQ_WEBHOOK_ALLOW).
    """
    body = await read_json(request, WebhookCreate)
    endpoint, secret = await services(request).webhooks.create(
        caller(request), url=body.url, event_types=body.event_types, description=body.description
    )
    return JSONResponse(
        {**endpoint_json(endpoint), "secret": secret},
        status_code=201,
        headers={**NO_STORE, "Location": f"/api/v1/webhooks/{endpoint.id}"},
    )


@endpoint("GET", "/api/v1/webhooks", name="api_webhooks", operation_id="listWebhooks",
          reply=Reply.json(WebhookList, "The organisation's endpoints"), access=KEEP)  # fmt: skip
async def list_webhooks(request: Request) -> Response:
    """回调地址列表 The organisation's webhook endpoints (employer; secrets are never shown again)."""
    found = await services(request).webhooks.list(caller(request))
    return JSONResponse({"webhooks": [endpoint_json(e) for e in found]}, headers=NO_STORE)


@endpoint("GET", "/api/v1/webhooks/{webhook_id}", name="api_webhook", operation_id="getWebhook",
          reply=Reply.json(WebhookOut, "The endpoint"), access=KEEP, params=(WEBHOOK_ID,))  # fmt: skip
async def get_webhook(request: Request) -> Response:
    """回调地址 One webhook endpoint (employer; another organisation's is a 404)."""
    found = await services(request).webhooks.get(caller(request), _webhook_id(request))
    return JSONResponse(endpoint_json(found), headers=NO_STORE)


@endpoint(
    "PATCH",
    "/api/v1/webhooks/{webhook_id}",
    name="api_webhook_update",
    operation_id="updateWebhook",
    reply=Reply.json(WebhookOut, "The endpoint as changed"),
    access=KEEP,
    params=(WEBHOOK_ID,),
    body=Body({"application/json": WebhookPatch}, example={"enabled": True}),
    raises=CHANGES,
)
async def update_webhook(request: Request) -> Response:
    """修改回调地址 Change a webhook endpoint: URL, event types, description, enabled (employer).

    A new URL is checked like a new endpoint's. Re-enabling an endpoint that was disabled (410 Gone, or failing
    for the whole retry period) delivers the events that arrived meanwhile.
    """
    body = await read_json(request, WebhookPatch)
    found = await services(request).webhooks.update(
        caller(request), _webhook_id(request), url=body.url, event_types=body.event_types,
        description=body.description, enabled=body.enabled,
    )  # fmt: skip
    return JSONResponse(endpoint_json(found), headers=NO_STORE)


@endpoint("DELETE", "/api/v1/webhooks/{webhook_id}", name="api_webhook_delete", operation_id="deleteWebhook",
          reply=Reply.json(WebhookDeleted, "Deleted, with its delivery log"), access=KEEP, params=(WEBHOOK_ID,),
          raises=(AuditUnavailable,))  # fmt: skip
async def delete_webhook(request: Request) -> Response:
    """删除回调地址 Delete a webhook endpoint and its delivery log (employer)."""
    webhook_id = _webhook_id(request)
    await services(request).webhooks.delete(caller(request), webhook_id)
    return JSONResponse({"id": webhook_id, "deleted": True}, headers=NO_STORE)


@endpoint("POST", "/api/v1/webhooks/{webhook_id}/rotate-secret", name="api_webhook_rotate",
          operation_id="rotateWebhookSecret", reply=Reply.json(WebhookCreated, "The new secret, shown this once"),
          access=KEEP, params=(WEBHOOK_ID,), raises=(AuditUnavailable,))  # fmt: skip
async def rotate_webhook_secret(request: Request) -> Response:
    """更换签名密钥 Rotate an endpoint's signing secret (employer); the new one is shown this once.

    For a day the deliveries carry two signatures, the new secret's and the old one's, so the receiver can switch
    over without dropping any.
    """
    endpoint, secret = await services(request).webhooks.rotate(caller(request), _webhook_id(request))
    return JSONResponse({**endpoint_json(endpoint), "secret": secret}, headers=NO_STORE)


@endpoint("GET", "/api/v1/webhooks/{webhook_id}/deliveries", name="api_webhook_deliveries",
          operation_id="listWebhookDeliveries", reply=Reply.json(DeliveryList, "Newest first"), access=KEEP,
          params=(WEBHOOK_ID, LIMIT, BEFORE), raises=(Unprocessable,))  # fmt: skip
async def list_deliveries(request: Request) -> Response:
    """投递记录 An endpoint's deliveries, newest first: each attempt's time, status code, latency, error (employer)."""
    limit = LIMIT.read(request)
    before = BEFORE.read(request) or None
    found = await services(request).webhooks.deliveries(caller(request), _webhook_id(request), limit=limit, before=before)
    next_before = found[-1].id if len(found) == limit else None
    return JSONResponse({"deliveries": [delivery_json(d) for d in found], "next_before": next_before}, headers=NO_STORE)


@endpoint("POST", "/api/v1/webhooks/deliveries/{delivery_id}/replay", name="api_webhook_replay",
          operation_id="replayWebhookDelivery",
          reply=Reply(202, {"application/json": DeliveryOut}, "Queued: sent at the next tick"), access=KEEP,
          params=(DELIVERY_ID,), raises=(Unprocessable, AuditUnavailable))  # fmt: skip
async def replay_delivery(request: Request) -> Response:
    """重发 Send a delivery again: the same message and webhook-id, as a new delivery (employer).

    The receiver can tell it from a new event by its webhook-id. The endpoint must be enabled.
    """
    raw = str(request.path_params["delivery_id"])
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise RouteNotFound(f"delivery {raw}")
    replayed = await services(request).webhooks.replay(caller(request), int(raw))
    return JSONResponse(delivery_json(replayed), status_code=202, headers=NO_STORE)


def webhook_routes() -> list[Route]:
    return [
        e.route()
        for e in (
            create_webhook,
            list_webhooks,
            get_webhook,
            update_webhook,
            delete_webhook,
            rotate_webhook_secret,
            list_deliveries,
            replay_delivery,
        )
    ]
