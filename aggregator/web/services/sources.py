"""What the sources are and how they are doing, for `GET /api/v1/sources`, the /sources page and the cards.

    health = await sources.health()        # [SourceHealth]: mode, circuit, recent calls, newest upload
    sources.names()                        # {"mem_records": "应急管理部 上报证书数据", ...}
    sources.recognition()                  # the mutual-recognition catalogue

Live sources report the runner's recent calls and their circuit breaker; records sources the calls lookups
made in this process (`record_stats`) and the newest quarter uploaded. A store that cannot say shows as such
on its records sources; the answer is still given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aggregator.config import RecognitionCatalogue
from aggregator.models import LIVE_MODES, Department, Mode
from aggregator.resilience import SourceStats
from aggregator.web.schemas import SourceHealth

if TYPE_CHECKING:
    from aggregator.gateway import Gateway

_STATS = ("calls", "success_rate", "p50_ms", "p95_ms", "outcomes", "last_error")


class SourceService:
    """The configured sources and their health."""

    def __init__(self, gateway: Gateway, record_stats: dict[str, SourceStats]) -> None:
        self._gateway = gateway
        self._record_stats = record_stats  # shared with the lookups, which fill it

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
