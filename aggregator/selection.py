"""Which sources a query goes to.

Uploaded records are asked for every number (a number that fits no known format may still be there).
A live or link source is asked when the number fits one of its patterns, or when the query carries an ID
number and the source is queried by ID number. Every other source is reported as skipped, with why, so
that the answer accounts for every source.
"""

from __future__ import annotations

from aggregator.config import SourceConfig
from aggregator.models import Outcome, Query, SourceResult
from aggregator.numbers import Classification


def select_sources(
    sources: list[SourceConfig], classification: Classification, query: Query
) -> tuple[list[SourceConfig], list[SourceResult]]:
    """Split `sources` into those to ask and skipped results for the others."""
    ask: list[SourceConfig] = []
    skipped: list[SourceResult] = []
    fits = classification.names
    for s in sources:
        if not s.enabled:
            reason = "数据源已停用 (source disabled)"
        elif not s.configured:
            reason = "未配置：本机没有设置此数据源的地址 (not configured: no endpoint set on this machine)"
        elif "*" in s.patterns or fits & set(s.patterns) or (query.id_number and "id18" in s.patterns):
            ask.append(s)
            continue
        else:
            reason = "此数据源不受理这种编号 (this source does not hold numbers of this format)"
        skipped.append(
            SourceResult(source=s.id, department=s.department, mode=s.mode, outcome=Outcome.SKIPPED, message=reason)
        )
    return ask, skipped


def holder_id_for(query: Query, classification: Classification) -> str | None:
    """The holder's ID number a query implies: given explicitly, or the number itself (ID, or MEM T+ID)."""
    if query.id_number:
        return query.id_number
    names = classification.names
    if names & {"id18", "id15"}:
        return query.number
    if "mem_t_id" in names:
        return query.number[1:]
    return None
