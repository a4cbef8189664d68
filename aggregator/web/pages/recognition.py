"""The mutual-recognition catalogue (对应目录) as a page, /recognition: every entry, who it applies to, what the
holder may apply for and what is waived, the skill level it counts as, and where the rule comes from. The same
catalogue as GET /api/v1/recognition (JSON)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aggregator.numbers import SKILL_LEVELS
from aggregator.web.access import services
from aggregator.web.pages.render import html_errors, render
from aggregator.web.pages.session import page_principal


def skill_level(level: int) -> str:
    """A skill level (5 = 五级/初级工 .. 1 = 一级/高级技师) in words."""
    return SKILL_LEVELS.get(level, f"{level} 级")


@html_errors
async def recognition_page(request: Request) -> Response:
    principal, _ = await page_principal(request)
    catalogue = services(request).sources.recognition()
    return render(
        request, "recognition.html", {"catalogue": catalogue, "skill_level": skill_level}, principal=principal
    )


routes = [Route("/recognition", recognition_page, methods=["GET"], name="page_recognition")]
