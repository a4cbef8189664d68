"""Long-running work: the job engine (`engine`, Procrastinate) and every job's state (`store`, certq's tables).

Rosters, monitoring cycles, campaigns and webhook deliveries register their handlers on a `JobEngine`; the
assembly that knows them all is `aggregator.web.services.work` (used by `certq worker` and `certq serve`).
"""

from aggregator.jobs.engine import JobEngine
from aggregator.jobs.store import Cancelled, Job, JobInterrupted, JobStore, Lease, LeaseLost

__all__ = ["Cancelled", "Job", "JobEngine", "JobInterrupted", "JobStore", "Lease", "LeaseLost"]
