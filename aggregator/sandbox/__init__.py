"""Simulated department sites for the demo, tests and benchmarks, serving docs/sources.md's wire shapes.

    from aggregator.sandbox import Sandbox, generate
    async with Sandbox(generate(today=date(2026, 11, 25))) as sb:
        sb.urls  # {"mem_api": "http://127.0.0.1:...", "samr_api": ..., "mohrss_html": ..., "mohurd_api": ...}

`dataset` is the deterministic synthetic data (also used by `certq demo` as uploaded records); `server`
runs the four sites (mem, samr, mohrss, mohurd); `faults` holds the fault switches; `cli` is `certq sandbox`.
"""

from __future__ import annotations

from aggregator.sandbox.dataset import Dataset, Example, Holder, generate, write_upload_csv
from aggregator.sandbox.faults import Faults
from aggregator.sandbox.server import DEFAULT_PORT_BASE, Sandbox

__all__ = ["DEFAULT_PORT_BASE", "Dataset", "Example", "Faults", "Holder", "Sandbox", "generate", "write_upload_csv"]
