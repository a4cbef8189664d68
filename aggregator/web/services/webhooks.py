"""Webhook endpoints as an organisation may keep them: registration (URL checked against SSRF), reads, changes,
secret rotation, the delivery log and replays; every change audited ("webhook_change").

    svc.webhooks.config                                         # WebhookConfig.from_env() unless given
    endpoint, secret = await svc.webhooks.create(principal, url=..., event_types=[...], description=...)
    await svc.webhooks.list(principal); await svc.webhooks.get(principal, endpoint_id)   # RouteNotFound unless theirs
    endpoint, secret = await svc.webhooks.rotate(principal, endpoint_id)
    deliveries = await svc.webhooks.deliveries(principal, endpoint_id, limit=50, before=None)
    delivery = await svc.webhooks.replay(principal, delivery_id)
    dispatcher = svc.webhooks.dispatcher()                      # the tick hook of the job engine (services/work.py)

An organisation is the label of the caller's key (as for rosters): another organisation's endpoint or delivery
is a 404. The secret is returned by `create` and `rotate` only, and never written to the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aggregator.rosters.webhook_config import WebhookConfig
from aggregator.rosters.webhook_store import Delivery, Endpoint, TooManyEndpoints, WebhookStore, utcnow
from aggregator.rosters.webhook_urls import Resolve, UrlPolicy
from aggregator.rosters.webhooks import WebhookDispatcher
from aggregator.web.problems import RouteNotFound, Unprocessable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from aggregator.audit import AuditLog
    from aggregator.rosters.webhook_store import Clock
    from aggregator.web.roles import Principal


def organisation_of(principal: Principal) -> str:
    return principal.label or ""


def host_of(url: str) -> str:
    """What the audit log keeps of a URL: its host (paths and queries can hold the receiver's own tokens)."""
    return urlsplit(url).hostname or ""


class WebhookService:
    def __init__(
        self,
        engine: AsyncEngine,
        audit: AuditLog,
        config: WebhookConfig | None = None,
        *,
        resolve: Resolve | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.config = config or WebhookConfig.from_env()
        self.resolve = resolve
        self.clock = clock
        self.store = WebhookStore(engine, clock=clock)
        self.policy = UrlPolicy(self.config, resolve=resolve)

    def dispatcher(self) -> WebhookDispatcher:
        return WebhookDispatcher(self.engine, self.config, clock=self.clock, resolve=self.resolve)

    async def _audit(self, principal: Principal, endpoint_id: str, change: str, **more: Any) -> None:
        await self.audit.record_action(principal, "webhook_change", detail={"webhook_id": endpoint_id, "change": change, **more})

    async def create(
        self, principal: Principal, *, url: str, event_types: Sequence[str] = (), description: str | None = None
    ) -> tuple[Endpoint, str]:
        await self.policy.check(url)
        try:
            endpoint, secret = await self.store.create(
                organisation_of(principal),
                created_by=principal.key_id or "",
                url=url,
                event_types=event_types,
                description=description or None,
                max_endpoints=self.config.max_endpoints,
            )
        except TooManyEndpoints as e:
            raise Unprocessable(f"每个机构最多 {e.limit} 个回调地址", f"at most {e.limit} webhook endpoints per organisation") from e
        await self._audit(principal, endpoint.id, "created", host=host_of(url), event_types=endpoint.event_types)
        return endpoint, secret

    async def list(self, principal: Principal) -> list[Endpoint]:
        return await self.store.list(organisation_of(principal))

    async def get(self, principal: Principal, endpoint_id: str) -> Endpoint:
        endpoint = await self.store.get(organisation_of(principal), endpoint_id)
        if endpoint is None:
            raise RouteNotFound(f"webhook {endpoint_id}")
        return endpoint

    async def update(
        self,
        principal: Principal,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Endpoint:
        await self.get(principal, endpoint_id)
        if url is not None:
            await self.policy.check(url)
        endpoint = await self.store.update(
            organisation_of(principal), endpoint_id, url=url, event_types=event_types, description=description,
            enabled=enabled,
        )  # fmt: skip
        if endpoint is None:
            raise RouteNotFound(f"webhook {endpoint_id}")
        changed = {
            k: v
            for k, v in (("host", host_of(url) if url else None), ("event_types", event_types), ("enabled", enabled))
            if v is not None
        }
        await self._audit(principal, endpoint_id, "updated", **changed)
        return endpoint

    async def delete(self, principal: Principal, endpoint_id: str) -> None:
        if not await self.store.delete(organisation_of(principal), endpoint_id):
            raise RouteNotFound(f"webhook {endpoint_id}")
        await self._audit(principal, endpoint_id, "deleted")

    async def rotate(self, principal: Principal, endpoint_id: str) -> tuple[Endpoint, str]:
        done = await self.store.rotate(organisation_of(principal), endpoint_id, grace_s=self.config.rotation_grace_s)
        if done is None:
            raise RouteNotFound(f"webhook {endpoint_id}")
        await self._audit(principal, endpoint_id, "secret_rotated")
        return done

    async def deliveries(
        self, principal: Principal, endpoint_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[Delivery]:
        found = await self.store.deliveries(organisation_of(principal), endpoint_id, limit=limit, before=before)
        if found is None:
            raise RouteNotFound(f"webhook {endpoint_id}")
        return found

    async def replay(self, principal: Principal, delivery_id: int) -> Delivery:
        org = organisation_of(principal)
        original = await self.store.delivery(org, delivery_id)
        if original is None:
            raise RouteNotFound(f"delivery {delivery_id}")
        endpoint = await self.store.get(org, original.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            raise Unprocessable(
                "回调地址已停用，请先启用（PATCH enabled=true）再重发",
                "the endpoint is disabled: enable it (PATCH enabled=true) before replaying",
            )
        replayed = await self.store.replay(org, delivery_id)
        assert replayed is not None
        await self._audit(principal, original.endpoint_id, "replayed", delivery_id=delivery_id, replay_id=replayed.id)
        return replayed
