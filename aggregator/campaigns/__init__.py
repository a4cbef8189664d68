"""Regulators' spot-check campaigns: a reproducible sample of the uploaded records, each checked against the
departments' live sources, and a discrepancy report with intervals.

    filters.py    Population (the filters) and Design (n, simple or stratified, allocation, seed): validated data
    regions.py    a certificate's province and city, from its number or the holder's ID number (Python and SQL)
    sampling.py   the frame, the strata, the allocation, the seeded draw (the same on SQLite and PostgreSQL)
    store.py      campaigns and their items in the database; each item's result written once
    checks.py     one item against the live sources through the gateway's runner; what disagrees, with evidence
    run.py        the "campaign_run" job: resumable, audited, progress through its lease
    report.py     rates per stratum with Wilson intervals, the chart, the CSV/XLSX rows
    stats.py      the Wilson score interval and how a rate is written
"""

from aggregator.campaigns.filters import CampaignInvalid, Design, Population, parse_design, parse_population
from aggregator.campaigns.store import Campaign, CampaignStore, Item

__all__ = ["Campaign", "CampaignInvalid", "CampaignStore", "Design", "Item", "Population", "parse_design", "parse_population"]
