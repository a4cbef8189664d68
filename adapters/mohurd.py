"""MOHURD 住建部 (建筑施工特种作业操作资格证书), after the province-to-ministry exchange schema: the generic JSON
adapter plus what config cannot say.

- `operationCategory` 99 is a trade a province recognises, described as "其他工种类别（建筑焊工）": the
  operation item is the name in the brackets (建筑焊工), the category keeps the description;
- a record without a description gets the national trade name of its code (01 建筑电工 ...);
- the status table must cover every certState code of the schema (01 有效, 02 暂扣, 03 吊销, 04 撤销, 05 注销,
  06 失效, 99 其他): a config that forgets one is refused at start-up rather than answering unknown.

Gender (1 男, 2 女) and the status table itself are plain config (config/sources/mohurd_api.toml).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import model_validator

from adapters.jsonapi import JsonApiAdapter, JsonApiOptions
from adapters.parsing import MISSING, clean_text, dotted_get, fold
from aggregator.numbers import MOHURD_TRADES

CERT_STATES: dict[str, str] = {
    "01": "有效",
    "02": "暂扣",
    "03": "吊销",
    "04": "撤销",
    "05": "注销",
    "06": "失效",
    "99": "其他",
}
_OTHER_TRADE = re.compile(r"其他工种(?:类别)?[(（]\s*(.+?)\s*[)）]")


def trade_of(description: str | None, code: str | None) -> tuple[str | None, str | None]:
    """(category, operation item) from a categoryDescription and operationCategory code.

    >>> trade_of("其他工种类别（建筑焊工）", "99")
    ('其他工种类别（建筑焊工）', '建筑焊工')
    >>> trade_of(None, "01")
    ('建筑电工', '建筑电工')
    """
    text = clean_text(description) or None
    if text is None and code:
        text = MOHURD_TRADES.get(clean_text(code).zfill(2))
    if text is None:
        return None, None
    if m := _OTHER_TRADE.search(text):
        return text, m.group(1)
    return text, text


class MohurdOptions(JsonApiOptions):
    trade_code: str = "operationCategory"  # path, within a record, of the 工种代码

    @model_validator(mode="after")
    def _every_cert_state(self) -> MohurdOptions:
        mapped = {fold(k) for k in self.status_map}
        missing = [c for c in CERT_STATES if c not in mapped]
        if missing:
            raise ValueError(f"status_map must map every certState code; missing {missing} ({CERT_STATES})")
        return self


class MohurdAdapter(JsonApiAdapter):
    """MOHURD's exchange-schema endpoint, by certificate number or ID number."""

    options_model = MohurdOptions
    options: MohurdOptions

    def adjust(self, record: dict[str, Any], raw: dict[str, Any], where: str) -> dict[str, Any]:
        code = dotted_get(record, self.options.trade_code, None)
        code = None if code is MISSING else code
        description = raw.get("category", raw.get("operation_item"))
        category, item = trade_of(description, clean_text(code) if code is not None else None)
        return {**raw, "category": category, "operation_item": item}
