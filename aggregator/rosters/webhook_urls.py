"""Which webhook URLs certq will call: server-side request forgery kept out, at registration and at delivery.

    policy = UrlPolicy(WebhookConfig.from_env())             # resolve= a test resolver, else the system's
    await policy.check("https://hooks.example.com/certq")   # raises UnsafeWebhookUrl: http(s) only, no
                                                             # credentials, every address public or allowed
    connector = aiohttp.TCPConnector(resolver=policy.resolver(), use_dns_cache=False)

Refused: an address that is loopback, private (RFC 1918, unique-local), link-local (169.254/16: the cloud
metadata services), carrier-grade NAT, multicast, reserved, unspecified, documentation or benchmarking ranges -
anything that is not globally routable - and the metadata addresses by name (169.254.169.254, 100.100.100.200,
fd00:ec2::254), unless `WebhookConfig.allow` names the address's network or the URL's host. A name is refused if
any of its addresses is refused (a name that resolves to a public and a private address could be steered to
the private one).

At delivery the name is resolved again by `resolver()`, the aiohttp resolver the connection is made with: it
returns only checked addresses, so the connection goes to the address that was checked (no second lookup for a
rebinding DNS server to change); an IP-address URL, which aiohttp does not resolve, is checked by `check_target`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from aggregator.errors import register
from aggregator.rosters.webhook_config import WebhookConfig

#: host name -> its IP addresses (as text); an OSError when it does not resolve.
Resolve = Callable[[str], Awaitable[list[str]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL = 2000
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254"))


class UnsafeWebhookUrl(ValueError):
    """A webhook URL certq will not call; `zh` and `en` say why."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en


register(UnsafeWebhookUrl, 422, 65, "unsafe-webhook-url", "回调地址不可用：{exc.zh}", "webhook URL refused: {exc.en}")


async def system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refused_because(address: Address) -> str | None:
    """Why an address may not be called (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "metadata service"
    for test, why in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, test):
            return why
    if not address.is_global:
        return "not globally routable"
    return None


class UrlPolicy:
    def __init__(self, config: WebhookConfig, *, resolve: Resolve | None = None) -> None:
        self.config = config
        self.resolve = resolve or system_resolve

    def parse(self, url: str) -> tuple[str, str, int]:
        """(scheme, host, port) of an acceptable URL's form; `UnsafeWebhookUrl` otherwise."""
        if not url or len(url) > MAX_URL or any(c.isspace() for c in url):
            raise UnsafeWebhookUrl(
                f"须为不超过 {MAX_URL} 字符、不含空白的网址", f"must be a URL of at most {MAX_URL} characters, no spaces"
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise UnsafeWebhookUrl("网址格式有误", f"malformed URL ({e})") from e
        if parts.scheme not in ("http", "https"):
            raise UnsafeWebhookUrl("只支持 http 或 https", "only http and https URLs are called")
        if parts.username is not None or parts.password is not None:
            raise UnsafeWebhookUrl("网址中不能包含用户名或密码", "a URL may not carry a user name or password")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise UnsafeWebhookUrl("网址缺少主机名", "the URL has no host")
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    def _allowed(self, host: str, address: Address) -> bool:
        if host.lower() in self.config.allowed_hosts:
            return True
        return any(address in net for net in self.config.allowed_networks)

    def check_address(self, host: str, address: Address) -> None:
        why = refused_because(address)
        if why is not None and not self._allowed(host, address):
            raise UnsafeWebhookUrl(
                f"{host} 指向内部地址 {address}（{why}），未在允许列表中",
                f"{host} resolves to {address} ({why}), which is not in CERTQ_WEBHOOK_ALLOW",
            )

    async def addresses(self, host: str) -> list[Address]:
        """Every address of `host` (itself if it is one), each checked; `UnsafeWebhookUrl` if any is refused."""
        literal = _literal(host)
        if literal is not None:
            found = [literal]
        else:
            try:
                found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self.resolve(host)]
            except (OSError, UnicodeError, ValueError) as e:
                raise UnsafeWebhookUrl(f"无法解析主机名 {host}", f"the host name {host} does not resolve ({e})") from e
            if not found:
                raise UnsafeWebhookUrl(f"无法解析主机名 {host}", f"the host name {host} does not resolve")
        for address in found:
            self.check_address(host, address)
        return found

    async def check(self, url: str) -> str:
        """The URL, if certq may call it (form and every address); `UnsafeWebhookUrl` says why not."""
        _, host, _ = self.parse(url)
        await self.addresses(host)
        return url

    def check_target(self, url: str) -> None:
        """At delivery, before connecting: the URL's form, and its address if it is an IP literal (aiohttp
        connects to those without asking the resolver)."""
        _, host, _ = self.parse(url)
        literal = _literal(host)
        if literal is not None:
            self.check_address(host, literal)

    def resolver(self) -> GuardedResolver:
        return GuardedResolver(self)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver for webhook deliveries: resolves, checks, and hands the connector only checked
    addresses (`UnsafeWebhookUrl`, an OSError for aiohttp, when any is refused)."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self.policy.addresses(host)
        except UnsafeWebhookUrl as e:
            raise RefusedAddress(e.zh, e.en) from e
        out: list[ResolveResult] = []
        for address in addresses:
            fam = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            out.append(
                ResolveResult(
                    hostname=host, host=str(address), port=port, family=fam, proto=0, flags=socket.AI_NUMERICHOST
                )
            )
        if not out:
            raise OSError(f"{host}: no address of the requested family")
        return out

    async def close(self) -> None:
        return None


class RefusedAddress(OSError):
    """Raised inside aiohttp's connector (which expects OSError from a resolver) for a refused address."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
