"""The service layer: what the API handlers and the pages both call, and their only way to the gateway.

    svc = Services.on(gateway, config=web_config, metrics=metrics)       # the app's lifespan
    svc = Services(gateway, keys=..., audit=..., limiter=..., metrics=..., config=...)   # parts of your own
    answer, view = await svc.lookup_for(principal, number, name=..., purpose=..., client_ip=ip)
    rows = await svc.verify_for(principal, pairs, purpose=..., client_ip=ip, rate_state=state)
    report = await svc.uploads.import_file(principal, saved_file, department=dept, quarter="2026Q1", partial=False)
    health = await svc.sources.health()
    state = await svc.receipts.issue(principal, number, name=..., base_url=url)   # signed receipts
    checks = await svc.probes.readiness()
    entries = await svc.audit.read(limit=50)             # the audit log (aggregator/audit)
    principal = await svc.keys.authenticate(secret)      # API keys (web/keys.py)

One concern per module: `lookups` (lookups and batches as a role may make them: purpose, name budget, rate
cost, audit, masking), `uploads` (who may upload or read what; import, then forget the department's cached
generation), `sources` (health and the recognition catalogue), `probes` (readiness and metrics). Nothing here
knows about HTTP: handlers read the request and write the response, and call these with plain values.

Imports go one way: web handlers and pages -> services -> gateway (and the records store behind it). Handlers
never touch `gateway` (a test guards it); it is public for the services and for tests that spy on the sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aggregator.audit import AuditLog
from aggregator.web.config import WebConfig
from aggregator.web.holders import HolderService, holder_limits
from aggregator.web.keys import KeyStore
from aggregator.web.metrics import Metrics
from aggregator.web.namebudget import NameBudget, create_name_budget
from aggregator.web.ratelimit import WindowLimiter, create_limiter
from aggregator.web.services.audit import AuditService
from aggregator.web.services.lookups import Lookups, audit_name_check, require_purpose
from aggregator.web.services.past import PastLookups
from aggregator.web.services.probes import Probes
from aggregator.web.services.receipts import ReceiptService
from aggregator.web.services.rosters import RosterService
from aggregator.web.services.sources import SourceService
from aggregator.web.services.uploads import UploadService
from aggregator.web.services.webhooks import WebhookService

if TYPE_CHECKING:
    from aggregator.gateway import Gateway
    from aggregator.web.services.work import Work

__all__ = ["Lookups", "Probes", "ReceiptService", "Services", "SourceService", "UploadService", "audit_name_check", "require_purpose"]


class Services(Lookups):
    """Everything a handler needs, built once by the app's lifespan: the lookups (inherited), keys, the audit
    log, uploads, sources and probes."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        keys: KeyStore,
        audit: AuditLog,
        limiter: WindowLimiter,
        metrics: Metrics,
        config: WebConfig,
        names: NameBudget | None = None,
        holders: HolderService | None = None,
    ) -> None:
        super().__init__(gateway, audit=audit, limiter=limiter, metrics=metrics, config=config, names=names)
        self.keys = keys
        self.holders = holders  # the holder's view (None: not offered)
        self.public_lookups = holders.public if holders is not None else None
        self.past = PastLookups(self)  # lookups as of a past date
        self.audit_search = AuditService(audit, keys)  # searching the audit log as a role may (issue 14)
        self.uploads = UploadService(gateway, audit)
        self.sources = SourceService(gateway, self.record_stats)
        self.probes = Probes(gateway, metrics, lambda: self.limiter)
        self.rosters = RosterService(self)  # employers' rosters (issue 11; runs start through self.work)
        self.webhooks = WebhookService(gateway.store.engine, audit)  # endpoints, log, replays (issue 11)
        # receipts: the signing key is loaded here, at start-up (see services/receipts.py)
        self.receipts = ReceiptService.on(self, gateway.store.engine)
        self.after_lookup = self.receipts.supersede
        self.work: Work | None = None  # long-running work (services/work.py), set by the app or the worker

    async def aclose(self) -> None:
        """Write what background helpers still hold (the public lookups counted for holders) before the app
        stops; the gateway is closed after this."""
        if self.public_lookups is not None:
            await self.public_lookups.flush()

    @classmethod
    def on(cls, gateway: Gateway, *, config: WebConfig, metrics: Metrics) -> Services:
        """The services on an open gateway: keys, the audit log and the name budget in its records database,
        rate limits and the name budget in its Redis (when it has one)."""
        engine, redis = gateway.store.engine, gateway.cache.client
        return cls(
            gateway,
            keys=KeyStore(engine, cache_s=config.key_cache_s),
            audit=AuditLog(engine),
            limiter=create_limiter(redis),
            metrics=metrics,
            config=config,
            names=create_name_budget(
                engine,
                redis,
                per_certificate=config.names_per_certificate,
                salt=config.name_salt.get_secret_value() if config.name_salt else None,
            ),
            holders=HolderService(engine, redis, limits=holder_limits(config)),
        )
