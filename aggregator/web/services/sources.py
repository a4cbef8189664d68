"""What the sources are and how they are doing, for `GET /api/v1/sources`, the /sources page and the cards.

    health = await sources.health()        # [SourceHealth]: mode, circuit, recent calls, newest upload
    status = await sources.status()        # [SourceHistoryView]: state now, 24 h / 30 d / 90 d bars, incidents
    one = await sources.history("mem_api")  # SourceHistoryView; RouteNotFound for an unknown source
    sources.names()                        # {"mem_records": "应急管理部 上报证书数据", ...}
    sources.recognition()                  # the mutual-recognition catalogue

Live sources report the runner's recent calls and their circuit breaker; records sources the calls lookups
made in this process (`record_stats`) and the newest quarter uploaded. A store that cannot say shows as such
on its records sources; the answer is still given.

The history (`status`, `history`) comes from the database every instance writes its counts to
(records/source_health.py), and each department's upload freshness from its batches (records/freshness.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from aggregator.config import HealthConfig, RecognitionCatalogue
from aggregator.models import LIVE_MODES, Department, Mode
from aggregator.records.freshness import china_today, upload_freshness
from aggregator.records.source_health import HealthHistory
from aggregator.resilience import CircuitState, SourceStats
from aggregator.web.problems import RouteNotFound
from aggregator.web.schemas import SourceHealth, SourceHistoryView

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

_STATS = ("calls", "success_rate", "p50_ms", "p95_ms", "outcomes", "last_error")


class SourceService:
    """The configured sources and their health."""

    def __init__(
        self,
        gateway: Gateway,
        record_stats: dict[str, SourceStats],
        *,
        clock: Callable[[], float] = time.time,
        today: Callable[[], date] = china_today,
    ) -> None:
        self._gateway = gateway
        self._record_stats = record_stats  # shared with the lookups, which fill it
        self.clock = clock  # "now" of the history (tests move it)
        self.today = today  # the day overdue uploads are judged on (China time)

    def names(self) -> dict[str, str]:
        """Source id -> its name, for the pages."""
        return {s.id: s.name for s in self._gateway.settings.sources}

    def recognition(self) -> RecognitionCatalogue:
        return self._gateway.settings.recognition

    async def health(self) -> list[SourceHealth]:
        """Every configured source: mode, circuit state, recent success rate and latency, last error, and for
        uploaded records the newest quarter and when it was uploaded."""
        gw = self._gateway
        latest: dict[Department, Any] = {}
        records_error: str | None = None
        try:
            latest = await gw.store.latest_batches()
        except Exception as e:  # noqa: BLE001 - a broken store shows as such, the answer is still given
            records_error = f"{type(e).__name__}: {e}"
        out = []
        for s in gw.settings.sources:
            item: dict[str, Any] = {
                "id": s.id,
                "name": s.name,
                "department": s.department,
                "mode": s.mode,
                "enabled": s.enabled,
                "kinds": list(s.kinds),
                "circuit": None,
                "records": None,
            }
            if s.mode in LIVE_MODES:
                state = await gw.resilience.breakers.state(s.id)
                item["circuit"] = {
                    "state": state.state,
                    "consecutive_failures": state.consecutive_failures,
                    "backoff_s": state.backoff_s,
                }
                snapshot = gw.runner.stats(s.id)
            else:
                snapshot = self._record_stats.get(s.id, SourceStats()).snapshot(s.id)
            item.update({k: snapshot.get(k) for k in _STATS})
            if s.mode == Mode.RECORDS:
                batch = latest.get(s.department)
                item["records"] = {
                    "quarter": batch.quarter if batch else None,
                    "uploaded_at": batch.uploaded_at if batch else None,
                    "rows_imported": batch.rows_imported if batch else 0,
                    "batch_id": batch.id if batch else None,
                    "error": records_error,
                }
            out.append(SourceHealth.model_validate(item))
        return out

    # --- the status page and GET /api/v1/sources/{id}/history ---------------------------------------------

    async def status(self) -> list[SourceHistoryView]:
        """Every configured source's state now, its 24 h / 30 d / 90 d availability bars and its incidents; for
        uploaded records also the department's upload freshness."""
        return await self._histories([s.id for s in self._gateway.settings.sources])

    def health_config(self) -> HealthConfig:
        """How the history is judged (health.toml): the down threshold, incidents, overdue uploads."""
        return self._gateway.settings.health

    async def history(self, source_id: str) -> SourceHistoryView:
        """One source's history; `RouteNotFound` when no source has this id."""
        if source_id not in self._gateway.settings.source_by_id:
            raise RouteNotFound(f"没有数据源 {source_id!r} (no source {source_id!r})")
        return (await self._histories([source_id]))[0]

    async def _histories(self, ids: list[str]) -> list[SourceHistoryView]:
        gw = self._gateway
        config = gw.settings.health
        engine = gw.store.engine
        histories = await HealthHistory(engine, config).overview(ids, now=self.clock())
        sources = [gw.settings.source_by_id[i] for i in ids]
        freshness = {}
        if any(s.mode == Mode.RECORDS for s in sources):
            freshness = await upload_freshness(engine, overdue_days=config.upload_overdue_days, today=self.today())
        out = []
        for s in sources:
            h = histories[s.id]
            circuit = None
            state = h.state
            if s.mode in LIVE_MODES:
                cb = await gw.resilience.breakers.state(s.id)
                circuit = {"state": cb.state, "consecutive_failures": cb.consecutive_failures, "backoff_s": cb.backoff_s}
                if cb.state == CircuitState.OPEN:
                    state = "down"
            if not s.enabled or (s.mode in LIVE_MODES and not s.configured):
                state = "off"
            elif s.mode == Mode.LINK:
                state = "manual"
            out.append(
                SourceHistoryView(
                    id=s.id,
                    name=s.name,
                    department=s.department,
                    mode=s.mode,
                    state=state,
                    circuit=circuit,
                    last_call_at=h.last_call_at,
                    windows=h.windows,
                    incidents=h.incidents,
                    incident_min_minutes=config.incident_min_minutes,
                    upload=freshness.get(s.department) if s.mode == Mode.RECORDS else None,
                )
            )
        return out
