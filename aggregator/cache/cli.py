"""`certq cache`: what the source cache holds, and emptying it on every instance at once.

    certq cache purge                      # every source's cached answers, in Redis and in every instance
    certq cache purge --source mem_api     # one source's
"""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console

from aggregator.cache.source_cache import SourceCache

console = Console()
err_console = Console(stderr=True)


@click.group("cache")
def cache_group() -> None:
    """The source-result cache (Redis and each instance's near tier)."""


@cache_group.command("purge")
@click.option("--source", "source_id", default=None, help="Only this source's answers (an id from `certq sources`).")
@click.option("--redis", "redis_url", envvar="CERTQ_REDIS_URL", default=None,
              help="The Redis every instance shares (default: the home's CERTQ_REDIS_URL).")  # fmt: skip
def purge_command(source_id: str | None, redis_url: str | None) -> None:
    """Remove cached answers so that the next lookups ask the sources again, on every running instance.

    Without Redis each instance's cache lives in its own process: restart it instead.
    """
    from aggregator.home import Home

    redis_url = redis_url or Home.load().redis_url
    if not redis_url:
        err_console.print(
            "[yellow]未配置 Redis：各实例的缓存在其进程内，重启即清空 (no Redis configured: each instance's cache "
            "lives in its process; restart it to empty it)[/yellow]"
        )
        sys.exit(2)

    async def run() -> int:
        cache = SourceCache.from_url(redis_url)
        try:
            return await cache.purge(source_id)
        finally:
            await cache.close()

    try:
        removed = asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - Redis unreachable: said plainly, no traceback
        err_console.print(f"[red]清除失败 (purge failed): {type(e).__name__}: {e}[/red]")
        sys.exit(1)
    what = f"数据源 {source_id} 的" if source_id else "全部"
    console.print(f"已清除{what}缓存 {removed} 项，各实例已通知 (removed {removed} cached keys; every instance told)")
