"""A record's frame key: a stable pseudo-random integer from its certificate's identity.

    frame_key("mem", "T110101199001011234", "低压电工作业", "110101199001011234")  # -> 0 <= k < 2**63

A campaign's sampling frame orders each stratum by this key (ties, practically never, broken by the text keys),
so drawing a sample sorts integers, not text. It is computed here, in Python, at import (and by migration 0010
for older rows), from what identifies the certificate: department, number, the sub-key that tells apart the
cards of one number (as `Certificate.key()`), and the holder's ID number. The first 8 bytes of BLAKE2b over
"department|number|sub|holder", masked to 63 bits, so that it fits a signed BIGINT on both databases and sorts
the same on both. The same certificate gets the same key in any process, on any database.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b
from typing import Any

from aggregator.models import SUB_KEY_FIELDS, Department

MASK = (1 << 63) - 1


def sub_key(department: str, category: str | None, operation_item: str | None) -> str:
    """What tells apart the cards of one number (`models.SUB_KEY_FIELDS`, as `Certificate.key()`)."""
    values = {"category": category, "operation_item": operation_item}
    return next((v for f in SUB_KEY_FIELDS.get(Department(department), ()) if (v := values[f])), "")


def frame_key(department: str, number: str, sub: str, holder_id_number: str | None) -> int:
    text = f"{department}|{number}|{sub}|{holder_id_number or ''}"
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big") & MASK


def keys_of(texts: Iterable[str]) -> list[int]:
    """`frame_key` of each "department|number|sub|holder" text (built by `frame_keys` or `key_text`)."""
    from_bytes = int.from_bytes
    return [from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big") & MASK for text in texts]


def key_text(department: str) -> Any:
    """A polars expression of the text `frame_key` hashes, over a frame of `RECORD_COLUMNS` (the columnar
    import's path: the text is built in polars, only the hashing is Python)."""
    import polars as pl

    sub = pl.coalesce(*(pl.col(f) for f in SUB_KEY_FIELDS.get(Department(department), ())), pl.lit(""))
    holder = pl.col("holder_id_number").fill_null("")
    return pl.concat_str([pl.lit(f"{department}|"), pl.col("number"), pl.lit("|"), sub, pl.lit("|"), holder])


def frame_keys(
    department: str,
    numbers: Iterable[str],
    categories: Iterable[str | None],
    operation_items: Iterable[str | None],
    holders: Iterable[str | None],
) -> list[int]:
    """`frame_key` of each record of one department, given column by column (the importer's hot path)."""
    prefix = department + "|"
    return keys_of(
        f"{prefix}{number}|{sub_key(department, category, item)}|{holder or ''}"
        for number, category, item, holder in zip(numbers, categories, operation_items, holders)
    )
