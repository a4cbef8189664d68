"""Every saved answer in tests/fixtures/<source>/ parsed by its source's adapter, compared with the expected
JSON beside it.

A case is `<case>.expected.json` plus its body: `<case>.json` / `<case>.html` for one request, or
`<case>.step1.json`, `<case>.step2.json` ... for a multi-step flow (bytes decoded as the runner does). The
expected file holds either `certificates` (each `Certificate.model_dump(mode="json")`) or `error` (`not_found`
or an `ErrorKind` value), optionally `exception` (the class name) and `where` (the path or selector a parse
error names). Optional:
`query` (default: the source's canary number) and `responses` (status and headers per step, default 200).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.base import HttpResponse, NotFound, ParseError, SourceError
from adapters.registry import build_adapter
from adapters.request import replay
from adapters.samr import SamrAdapter
from aggregator.config import SourceConfig, _expand_env
from aggregator.models import Query
from aggregator.runner import decode_body  # bodies are decoded as the runner decodes them
from tests.conftest import FIXTURES, TODAY

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sources"
SOURCES = ("mem_api", "samr_api", "mohrss_html", "mohurd_api")


def load_source(source_id: str) -> SourceConfig:
    """A source's config straight from its TOML file (independent of the rest of the config directory)."""
    raw = _expand_env(tomllib.loads((CONFIG / f"{source_id}.toml").read_text(encoding="utf-8")))
    raw.setdefault("id", source_id)
    return SourceConfig.model_validate(raw)


def adapter_for(source_id: str) -> Any:
    source = load_source(source_id)
    if source.adapter == "samr":
        return SamrAdapter(source, today=lambda: TODAY)
    return build_adapter(source)


def bodies(directory: Path, case: str) -> list[str]:
    steps = sorted(directory.glob(f"{case}.step*.*"), key=lambda p: int(p.name.split(".step")[1].split(".")[0]))
    if steps:
        return [decode_body(p.read_bytes(), "utf-8") for p in steps]
    single = [p for p in directory.glob(f"{case}.*") if p.suffix in (".json", ".html") and ".expected" not in p.name]
    assert len(single) == 1, f"{directory.name}/{case}: expected exactly one body file, found {single}"
    return [decode_body(single[0].read_bytes(), "utf-8")]


def cases() -> list[tuple[str, str]]:
    out = []
    for source_id in SOURCES:
        for path in sorted((FIXTURES / source_id).glob("*.expected.json")):
            out.append((source_id, path.name.removesuffix(".expected.json")))
    return out


def outcome(source_id: str, case: str) -> dict[str, Any]:
    """What the adapter makes of a saved case, in the shape of the expected files."""
    directory = FIXTURES / source_id
    expected = json.loads((directory / f"{case}.expected.json").read_text(encoding="utf-8"))
    adapter = adapter_for(source_id)
    query = Query(**expected.get("query", {"number": adapter.source.canary.valid}))
    texts = bodies(directory, case)
    metas = expected.get("responses", [{}] * len(texts))
    responses = [
        HttpResponse(status=m.get("status", 200), url="http://sandbox.test/", headers=m.get("headers", {}), text=t)
        for m, t in zip(metas, texts, strict=True)
    ]
    try:
        _, certs = replay(adapter.lookup(query), responses)
    except NotFound:
        return {"error": "not_found"}
    except ParseError as e:
        return {"error": e.kind.value, "exception": type(e).__name__, "where": e.where}
    except SourceError as e:
        return {"error": e.kind.value, "exception": type(e).__name__}
    return {"certificates": [c.model_dump(mode="json") for c in certs]}


@pytest.mark.parametrize(("source_id", "case"), cases(), ids=[f"{s}/{c}" for s, c in cases()])
def test_saved_answer_parses_as_expected(source_id: str, case: str) -> None:
    expected = json.loads((FIXTURES / source_id / f"{case}.expected.json").read_text(encoding="utf-8"))
    got = outcome(source_id, case)
    if "certificates" in expected:
        assert got == {"certificates": expected["certificates"]}
    else:
        want = {k: expected[k] for k in ("error", "exception", "where") if k in expected}
        assert {k: got.get(k) for k in want} == want, got


def test_every_source_has_the_required_cases() -> None:
    required = {"one", "several", "not_found", "captcha", "ban", "maintenance", "layout_changed", "truncated"}
    for source_id in SOURCES:
        have = {p.name.removesuffix(".expected.json") for p in (FIXTURES / source_id).glob("*.expected.json")}
        assert required <= have, f"{source_id} lacks {sorted(required - have)}"
    assert "history" in {p.name.removesuffix(".expected.json") for p in (FIXTURES / "mem_api").glob("*.expected.json")}


if __name__ == "__main__":  # print what the adapters make of each case, to review when writing a new one
    import sys

    for source_id, case in cases():
        if len(sys.argv) < 2 or f"{source_id}/{case}" in sys.argv[1:]:
            print(f"== {source_id}/{case}")
            print(json.dumps(outcome(source_id, case), ensure_ascii=False, indent=2))
