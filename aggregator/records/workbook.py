"""The importer's side of the workbook reader (`sheetreader`): start the child process, read its rows lazily
with a wall-clock limit on every wait, and turn every way it can fail into a refused file.

    reader = SheetReader(path, "xlsx", limits)     # starts the child
    meta = reader.start()                           # the sheet's name, size and warnings; UnreadableFile if refused
    for first_line, rows, long_cells in reader.batches():
        ...
    reader.close()                                  # kills (if still running) and reaps it; safe to call twice

The child is a plain subprocess (`python -I sheetreader.py`, never a fork of this process, which may hold
threads and database connections) that limits its own memory and CPU time. If it is refused, dies (a Rust
abort on a failed allocation, a signal, MemoryError, any other exit) or stays silent for `timeout_s`, the
file is refused with a reason in Chinese and English (`UnreadableFile`). `close` may be called from another
thread while a read is waiting (an import cancelled mid-file): the child is killed at once and the pipe is
closed by the reader when its wait returns, never under it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from aggregator.records import sheetreader
from aggregator.records.limits import GiB, ImportLimits, MiB
from aggregator.records.report import RowProblem, UnreadableFile

READER = Path(sheetreader.__file__).resolve()
_STDERR_TAIL = 4096
_READ_BYTES = 1 << 20
# What the child's stderr says when an allocation failed: Rust's abort, Python's MemoryError, libc.
_OUT_OF_MEMORY = ("memory allocation of", "MemoryError", "Cannot allocate memory", "out of memory")


def _refused(reason: str) -> UnreadableFile:
    return UnreadableFile([RowProblem(line=1, reason=reason)])


def _size(n: int) -> str:
    if n >= GiB and n % (GiB // 4) == 0:
        return f"{n / GiB:g} GiB"
    return f"{n / MiB:,.0f} MiB"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _reap(proc: subprocess.Popen[bytes], files: tuple[IO[bytes], ...]) -> None:
    """Kill the child if it still runs, wait for it, close our ends. Also the finalizer of a forgotten reader."""
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
        pass
    for f in files:
        f.close()


class SheetReader:
    """One run of the workbook reader on one file."""

    def __init__(self, path: Path, file_format: str, limits: ImportLimits) -> None:
        self.limits = limits
        self.bytes_read = 0  # bytes of messages received: what the rows cost in memory, roughly
        # A row is at most max_columns cells of max_cell_chars, written as ASCII JSON (up to 6 bytes a character).
        self._max_message = 6 * (limits.max_columns * limits.max_cell_chars + sheetreader.BATCH_CHARS) + MiB
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the child's stderr, closed by _reap
        env = {**os.environ, "RUST_BACKTRACE": "0", "MALLOC_ARENA_MAX": "2"}
        argv = [sys.executable, "-I", str(READER), str(path), file_format, limits.model_dump_json()]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0)
        assert self._proc.stdout is not None
        self._out = self._proc.stdout
        self._fd = self._out.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._buffer = bytearray()
        self._scanned = 0
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._timed_out = False
        self._finalizer = weakref.finalize(self, _reap, self._proc, (self._out, self._stderr))

    # --- messages ------------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Wait for the sheet to be loaded: {"sheet", "height", "width", "warnings"}. Raises `UnreadableFile`."""
        message = self._next()
        if "sheet" not in message:
            raise self._failed("rows before the sheet")
        return message

    def batches(self) -> Iterator[tuple[int, list[list[Any]], list[list[int]]]]:
        """(first line, rows, [line, column, length] of overlong cells) until the sheet ends; then the child is
        reaped. Raises `UnreadableFile` if it fails on the way."""
        while True:
            message = self._next()
            rows = message.get("rows")
            if rows is not None:
                if type(rows) is not list or not isinstance(message.get("line"), int):
                    raise self._failed("malformed rows")
                yield message["line"], rows, message.get("long") or []
            elif "end" in message:
                self.close()
                return
            else:
                raise self._failed("an unexpected message")

    def _next(self) -> dict[str, Any]:
        line = self._line()
        if line is None:
            raise self._failed(None)
        try:
            message = json.loads(line, object_hook=sheetreader.untag)
        except (ValueError, TypeError, IndexError, RecursionError):
            message = None
        if type(message) is not dict:
            raise self._failed("a message that is not JSON")
        if "refused" in message:
            self.close()
            raise _refused(str(message["refused"]))
        return message

    def _line(self) -> bytearray | None:
        """The next line from the child, or None at the end of its output. Waits at most `timeout_s` in all."""
        with self._lock:
            if self._closed:
                raise _refused("工作簿读取已中止 (reading the workbook was stopped)")
            self._busy = True
        try:
            deadline = time.monotonic() + self.limits.timeout_s
            buffer = self._buffer
            while True:
                end = buffer.find(b"\n", self._scanned)
                if end >= 0:
                    line = buffer[:end]
                    del buffer[: end + 1]
                    self._scanned = 0
                    self.bytes_read += end + 1
                    return line
                self._scanned = len(buffer)
                if len(buffer) > self._max_message:
                    raise self._failed(f"a message longer than {self._max_message:,} bytes")
                left = deadline - time.monotonic()
                if left <= 0 or not self._poll.poll(left * 1000):
                    self._timed_out = True
                    raise self._failed(None)
                data = os.read(self._fd, _READ_BYTES)
                if not data:
                    return None
                buffer += data
        finally:
            with self._lock:
                self._busy = False
                closed = self._closed
            if closed:
                self._finalizer()

    # --- ending --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the child if it still runs and reap it. From any thread; idempotent."""
        with self._lock:
            self._closed = True
            busy = self._busy
        if busy:  # a read is waiting in another thread: end the child, and let that read close the pipe
            if self._proc.poll() is None:
                self._proc.kill()
            return
        self._finalizer()

    def _failed(self, detail: str | None) -> UnreadableFile:
        """Why the child failed (after killing and reaping it), as a refused file. `detail`: what was wrong
        with its output, if that was the failure."""
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        code = self._proc.returncode
        tail = self._stderr_tail()
        self.close()
        limits, safe = self.limits, sheetreader.SAFE
        if self._timed_out:
            return _refused(
                f"{safe}超出时间限制（{limits.timeout_s:g} 秒内没有读出数据） "
                f"(the workbook could not be read within the time limit: nothing was read for {limits.timeout_s:g} s)"
            )
        if detail:
            return _refused(f"{safe}读取进程的输出有误 (the workbook could not be read safely: the reader sent {detail})")
        if code == sheetreader.EXIT_MEMORY or any(s in tail for s in _OUT_OF_MEMORY):
            memory = _size(limits.memory_bytes)
            return _refused(f"{safe}超出内存限制（{memory}） (the workbook could not be read within the memory limit of {memory})")
        if code == -signal.SIGXCPU:
            return _refused(
                f"{safe}超出 CPU 时间限制（{limits.cpu_s} 秒） "
                f"(the workbook could not be read within the CPU time limit of {limits.cpu_s} s)"
            )
        how = _signal_name(-code) if code is not None and code < 0 else f"exit code {code}"
        return _refused(f"{safe}读取进程意外退出（{how}） (the workbook reader stopped unexpectedly: {how})")

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - _STDERR_TAIL))
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
