"""Slow clients against a real server on loopback (aggregator/web/protocol.py): a request head must arrive within
the header timeout, a request body must keep moving, and one IP may hold only so many connections.

Each test runs on uvicorn's httptools and h11 protocols, with a 0.5 s header timeout and a cap of 4
connections per IP, over raw sockets (so that the test, not a client library, decides what is sent when).
"""

from __future__ import annotations

import pickle
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from pydantic import ValidationError
from uvicorn.server import ServerState

from aggregator.web.app import create_app
from aggregator.web.config import WebConfig
from aggregator.web.protocol import GuardedHttpToolsProtocol, Limits, guarded_protocol
from tests.web_support import build_env, quiet_config, records_settings

HEAD_TIMEOUT = 0.5
CAP = 4
MARGIN = 1.0  # allowed lateness of the server's close on a loaded machine
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: certq\r\n\r\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    return build_env(tmp_path_factory.mktemp("slow-clients"))


@pytest.fixture(scope="module", params=["httptools", "h11"])
def port(request: pytest.FixtureRequest, env) -> Iterator[int]:
    """A uvicorn server on 127.0.0.1 (ephemeral port) with the guarded protocol, in a background thread."""
    web = quiet_config(header_timeout=HEAD_TIMEOUT, max_connections_per_ip=CAP)
    app = create_app(records_settings(), database_url=env.database_url, redis_url="", web=web)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        http=guarded_protocol(web, request.param),
        timeout_keep_alive=30,  # idle keep-alive connections stay for the cap test
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-slow-{request.param}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- raw-socket helpers -------------------------------------------------------------------------------


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float | None]:
    """What the server sends until it closes (EOF or reset), and when it closed (None: still open at limit_s)."""
    started = time.monotonic()
    got = b""
    while (left := limit_s - (time.monotonic() - started)) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return got, time.monotonic() - started
        got += chunk
    return got, None


def trickle_until_closed(sock: socket.socket, data: bytes, every_s: float, limit_s: float) -> float | None:
    """Send `data` a byte at a time; seconds from the first byte until the server closed (None: never)."""
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > limit_s:
            return None
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        ready, _, _ = select.select([sock], [], [], every_s)
        if ready:
            try:
                if not sock.recv(65536):
                    return time.monotonic() - started
            except ConnectionResetError:
                return time.monotonic() - started
    return None


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:]) if k.lower() == b"content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a response body"
        body += chunk
    return int(lines[0].split()[1]), body


def is_open(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    return not ready  # readable with nothing sent to it would mean EOF (or an unasked answer)


# --- the head deadline --------------------------------------------------------------------------------


def test_a_connection_without_a_complete_head_is_closed_within_the_timeout(port: int) -> None:
    started = time.monotonic()
    silent = connect(port)
    half = connect(port)
    with silent, half:
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: certq\r\nX-Slow: 1\r\n")  # never the blank line
        for sock in (silent, half):
            got, closed_after = read_until_closed(sock, HEAD_TIMEOUT + MARGIN)
            assert closed_after is not None, "the server kept a connection that never completed its head"
            assert got == b""  # closed without an answer
            assert HEAD_TIMEOUT * 0.8 <= time.monotonic() - started <= HEAD_TIMEOUT + MARGIN


def test_normal_requests_and_a_head_sent_in_pieces_in_time_are_answered(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(HEALTHZ)
        assert read_response(sock)[0] == 200
        for piece in (b"GET /healthz HT", b"TP/1.1\r\nHost: cer", b"tq\r\n\r\n"):  # 0.2 s in all, keep-alive
            sock.sendall(piece)
            time.sleep(0.1)
        assert read_response(sock)[0] == 200
        sock.sendall(HEALTHZ)
        assert read_response(sock)[0] == 200


def test_a_keep_alive_connection_that_idles_then_trickles_is_closed(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(HEALTHZ)
        assert read_response(sock)[0] == 200
        time.sleep(HEAD_TIMEOUT + 0.2)  # idle between requests is the keep-alive timeout's business (30 s here)
        assert is_open(sock)
        closed_after = trickle_until_closed(sock, HEALTHZ, every_s=0.05, limit_s=HEAD_TIMEOUT + MARGIN)
        assert closed_after is not None, "a head trickled in a byte at a time was waited for"
        assert closed_after >= HEAD_TIMEOUT * 0.8


# --- the body rate ------------------------------------------------------------------------------------


def post_head(length: int) -> bytes:
    return (
        b"POST /login HTTP/1.1\r\nHost: certq\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_a_body_that_streams_longer_than_the_timeout_is_received(port: int) -> None:
    body = b"key=" + b"x" * 1196  # 1,200 bytes in 6 pieces 0.15 s apart: 0.75 s, well above the minimum rate
    with connect(port) as sock:
        sock.sendall(post_head(len(body)))
        for i in range(0, len(body), 200):
            time.sleep(0.15)
            sock.sendall(body[i : i + 200])
        status, _ = read_response(sock)
        assert status in (400, 401, 403)  # answered (no CSRF token, no valid key), not cut


def test_a_body_that_trickles_is_cut(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(post_head(1000))
        closed_after = trickle_until_closed(sock, b"key=" + b"x" * 996, every_s=0.1, limit_s=2 * HEAD_TIMEOUT + MARGIN)
        assert closed_after is not None, "a body arriving at 10 bytes a second was waited for"


# --- connections per IP -------------------------------------------------------------------------------


def test_connections_over_the_cap_from_one_ip_are_refused_until_some_close(port: int) -> None:
    held = [connect(port) for _ in range(CAP)]
    try:
        for sock in held:  # each a live keep-alive connection, idle after its answer
            sock.sendall(HEALTHZ)
            assert read_response(sock)[0] == 200
        with connect(port) as extra:
            got, closed_after = read_until_closed(extra, 2.0)
            assert got.startswith(b"HTTP/1.1 429 ") and b"connection: close" in got.lower()
            assert closed_after is not None
        try:
            other_ip = connect(port, source="127.0.0.2")  # another address: its own count
        except OSError:
            other_ip = None
        if other_ip is not None:
            with other_ip:
                other_ip.sendall(HEALTHZ)
                assert read_response(other_ip)[0] == 200
        assert all(is_open(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 2.0  # the server notices the closes on its own loop
    while True:
        with connect(port) as sock:
            sock.sendall(HEALTHZ)
            try:
                if read_response(sock)[0] == 200:
                    break
            except (AssertionError, ConnectionResetError):
                pass
        assert time.monotonic() < deadline, "the cap stayed full after its connections closed"
        time.sleep(0.05)


def test_a_request_head_larger_than_64_kib_is_refused(port: int, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params.get("port") == "h11":
        pytest.skip("h11 (only used where httptools is missing) bounds incomplete heads itself, at 16 KiB")
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: certq\r\n" + b"X-Pad: " + b"a" * (70 * 1024) + b"\r\n\r\n")
        got, closed_after = read_until_closed(sock, 2.0)
    assert closed_after is not None and got.startswith(b"HTTP/1.1 431 ")
    with connect(port) as sock:  # a normal head still goes through
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: certq\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_a_trusted_proxy_is_not_capped_per_ip() -> None:
    from aggregator.web.protocol import Limits

    limits = Limits.of(quiet_config(max_connections_per_ip=CAP, trusted_proxies=["10.0.0.0/8"]))
    assert not limits.capped("10.1.2.3")  # a proxy's connections carry many clients
    assert limits.capped("203.0.113.9")
    assert not Limits.of(quiet_config(max_connections_per_ip=0)).capped("203.0.113.9")


# --- settings -----------------------------------------------------------------------------------------


def test_the_limits_come_from_the_environment_and_reach_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (WebConfig().header_timeout, WebConfig().max_connections_per_ip) == (10.0, 64)
    web = WebConfig.from_env({"CERTQ_WEB_HEADER_TIMEOUT": "2.5", "CERTQ_WEB_MAX_CONNECTIONS_PER_IP": "0"})
    assert (web.header_timeout, web.max_connections_per_ip) == (2.5, 0)
    for var, value in (("CERTQ_WEB_HEADER_TIMEOUT", "-1"), ("CERTQ_WEB_MAX_CONNECTIONS_PER_IP", "lots")):
        with pytest.raises(ValidationError):
            WebConfig.from_env({var: value})

    # --workers: uvicorn pickles its config, so the class goes by name and reads CERTQ_WEB_* where it serves
    assert pickle.loads(pickle.dumps(guarded_protocol())) is GuardedHttpToolsProtocol
    monkeypatch.setenv("CERTQ_WEB_HEADER_TIMEOUT", "3")
    monkeypatch.setenv("CERTQ_WEB_MAX_CONNECTIONS_PER_IP", "7")
    worker_class = type("WorkerProtocol", (GuardedHttpToolsProtocol,), {})  # a fresh process's class: no limits yet
    monkeypatch.setattr(worker_class, "limits", None)

    async def noop(scope, receive, send) -> None:  # pragma: no cover - never called
        pass

    proto = worker_class(config=uvicorn.Config(noop), server_state=ServerState(), app_state={}, _loop=object())
    assert proto._limits == Limits(header_timeout=3.0, max_per_ip=7)


def test_a_large_body_sent_with_its_head_is_not_taken_for_a_large_head(port: int) -> None:
    body = b"x" * (200 * 1024)
    head = b"POST /healthz HTTP/1.1\r\nHost: certq\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    with connect(port) as sock:
        sock.sendall(head + body)  # one write: the first chunk the server reads holds head and body
        status, _ = read_response(sock)
    assert status != 431
