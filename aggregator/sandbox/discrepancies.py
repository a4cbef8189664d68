"""What the sandbox seeded: where the demo's uploads and the simulated live sites disagree, for TESTS only.

    for d in seeded_discrepancies(dataset):
        d.department, d.number, d.key, d.holder_id_number, d.kind, d.how

The app never imports this: a spot-check campaign must find these by asking the sites, and the tests compare
what it found with this list. Kinds, as `aggregator.campaigns.checks` names them:

- status: uploaded valid, suspended on the live site since (`suspended_after_upload`)
- field: renewed on the live site after the upload: a later end date (`renewed_after_upload`)
- not_found_live: uploaded, unknown to the live site (`not_on_live_site`)
- missing_from_upload: issued after the upload, only the live site has it (`issued_after_upload`); a campaign
  sees it only when it checks another certificate of the same holder (it asks about the holder's ID number)

`expired_after_upload` (uploaded valid, marked expired on the site after its end date passed) is not a
discrepancy as of the data set's today: both sides then say expired, and it is left out unless they differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.models import Certificate, Department
from aggregator.sandbox.dataset import Dataset

KIND_OF_HOW = {
    "suspended_after_upload": "status",
    "renewed_after_upload": "field",
    "not_on_live_site": "not_found_live",
    "issued_after_upload": "missing_from_upload",
    "expired_after_upload": "status",
}


@dataclass(frozen=True)
class SeededDiscrepancy:
    department: str
    number: str
    key: tuple[str, str, str]  # Certificate.key() of the certificate concerned
    holder_id_number: str
    kind: str  # status | field | not_found_live | missing_from_upload
    how: str  # the sandbox's own word for it


def _difference_key(c: Certificate) -> str:
    return c.number if c.department != Department.MEM else f"{c.number}/{c.operation_item}"


def seeded_discrepancies(dataset: Dataset) -> list[SeededDiscrepancy]:
    """Every seeded disagreement between the uploads and the live sites that holds as of `dataset.today`."""
    out: list[SeededDiscrepancy] = []
    for d in Department:
        uploaded = {c.key(): c for c in dataset.uploaded[d]}
        live = {c.key(): c for c in dataset.live[d]}
        for key, c in live.items():
            how = dataset.differences.get(_difference_key(c))
            u = uploaded.get(key)
            if how is None or how == "not_on_live_site" or u == c:
                continue
            if how == "expired_after_upload" and u is not None:
                if u.effective_status(dataset.today) == c.effective_status(dataset.today):
                    continue
            out.append(SeededDiscrepancy(d.value, c.number, key, c.holder_id_number or "", KIND_OF_HOW[how], how))
        for key, u in uploaded.items():
            if key not in live and dataset.differences.get(_difference_key(u)) == "not_on_live_site":
                out.append(
                    SeededDiscrepancy(d.value, u.number, key, u.holder_id_number or "", "not_found_live", "not_on_live_site")
                )
    return out
