"""The client's IP address: the TCP peer, or what a trusted proxy says it is.

    client_ip(scope, trusted=(ip_network("10.0.0.0/8"),))

Proxy headers are believed only when the peer is a trusted proxy; anyone else could write them. With
X-Forwarded-For ("client, proxy1, proxy2") the addresses are read from the right, skipping trusted proxies:
the first untrusted one is the client (a client cannot forge the entries its proxies append). X-Real-IP is
used when X-Forwarded-For is absent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(addr: Address, trusted: Sequence[Network]) -> bool:
    return any(addr in net for net in trusted)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]
    return ",".join(values) if values else None


def client_ip(scope: dict[str, Any], trusted: Sequence[Network] = ()) -> str | None:
    """The client address of an ASGI request (None when the server gives no peer)."""
    client = scope.get("client")
    peer_text = client[0] if client else None
    if not trusted or peer_text is None:
        return peer_text
    peer = _parse(peer_text)
    if peer is None or not _trusted(peer, trusted):
        return peer_text
    forwarded = _header(scope, b"x-forwarded-for")
    if forwarded:
        hops = [h for h in forwarded.split(",") if h.strip()]
        last: Address = peer
        for hop in reversed(hops):
            addr = _parse(hop)
            if addr is None:  # garbage in the chain: stop at the last address we could trust
                return str(last)
            if not _trusted(addr, trusted):
                return str(addr)
            last = addr
        return str(last)  # every hop is a trusted proxy: the leftmost is as far as we can see
    real = _header(scope, b"x-real-ip")
    if real:
        addr = _parse(real.split(",")[0])
        if addr is not None:
            return str(addr)
    return peer_text
