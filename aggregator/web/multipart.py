"""Streaming multipart/form-data: the file part goes straight to a temporary file, never into memory.

    form = await receive_multipart(request, dest_dir=None, file_limit=200 * 1024 * 1024)
    try:
        form.fields["quarter"], form.file.path, form.file.name, form.file.size
    finally:
        form.discard()

The size limit is enforced while the bytes arrive (`UploadTooLarge` the moment the file passes it, and the
partial file is deleted). At most one file part is accepted; text fields are small and few.

The temporary file is deleted on every path out of a request (a bad or oversize body, the client going away
mid-upload, the caller's `discard` after the import, whatever it raised). Only a process that dies keeps
its files: their names carry the process id (`certq-upload-<pid>-…`), and `remove_stale_uploads`, run
when the app starts, deletes those of processes that no longer run.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from aggregator.web.problems import BadRequest, UploadTooLarge

MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
PREFIX = "certq-upload-"
STALE_AFTER_S = 24 * 3600  # a temporary upload this old is left over whoever made it (a reused pid)
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_OWNER = re.compile(r"^certq-upload-(\d+)-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_uploads(dest_dir: str | None) -> int:
    """Delete the temporary uploads in `dest_dir` (default: the system temp directory) left by processes
    that no longer run (a worker that crashed mid-import), and any older than a day. Returns how many.

    Files of running processes (other workers sharing the directory) are kept: they may be mid-upload."""
    folder = Path(dest_dir or tempfile.gettempdir())
    removed = 0
    now = time.time()
    try:
        candidates = list(folder.glob(PREFIX + "*"))
    except OSError:
        return 0
    for path in candidates:
        owner = _OWNER.match(path.name)
        try:
            if not path.is_file():
                continue
            if owner is not None and int(owner.group(1)) != os.getpid() and not _running(int(owner.group(1))):
                stale = True
            else:  # ours, a running process's, or named before names carried the pid: by age
                stale = now - path.stat().st_mtime > (STALE_AFTER_S if owner is not None else 3600)
            if stale:
                path.unlink()
                removed += 1
        except (OSError, ValueError):
            continue
    return removed


@dataclass
class SavedFile:
    path: Path  # the temporary file (its suffix is the uploaded name's, so readers can tell the format)
    name: str  # the file name as uploaded, without any directory part
    size: int
    content_type: str | None = None


@dataclass
class Multipart:
    fields: dict[str, str] = field(default_factory=dict)
    file: SavedFile | None = None

    def discard(self) -> None:
        """Delete the temporary file (safe to call twice)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.path.unlink(missing_ok=True)


def _bad(zh: str, en: str) -> BadRequest:
    return BadRequest(zh, en)


class _Collector:
    """The parser's callbacks: headers of each part, then its data to a field buffer or to the file."""

    def __init__(self, dest_dir: str | None, file_field: str, file_limit: int) -> None:
        self.dest_dir = dest_dir
        self.file_field = file_field
        self.file_limit = file_limit
        self.result = Multipart()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._buffer = bytearray()
        self._out: IO[bytes] | None = None
        self._is_file = False
        self._size = 0

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._buffer = bytearray()
        self._is_file = False
        self._size = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise _bad("表单字段缺少名称", "a form part has no name")
        self._name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            if len(self.result.fields) >= MAX_FIELDS:
                raise _bad("表单字段过多", f"more than {MAX_FIELDS} form fields")
            return
        if self._name != self.file_field:
            raise _bad(f"文件字段应名为 {self.file_field}", f"the file field must be named {self.file_field!r}")
        if self.result.file is not None:
            raise _bad("只能上传一个文件", "upload one file at a time")
        display = os.path.basename(filename.decode("utf-8", "replace").replace("\\", "/")).strip() or "upload"
        suffix = Path(display).suffix.lower()
        fd, tmp = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=suffix if _SAFE_SUFFIX.match(suffix) else "",
                                   dir=self.dest_dir)
        ctype = self._headers.get(b"content-type")
        self.result.file = SavedFile(Path(tmp), display[:255], 0, ctype.decode("latin-1") if ctype else None)
        self._out = os.fdopen(fd, "wb")
        self._is_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self._size += len(chunk)
            if self._size > self.file_limit:
                raise UploadTooLarge(self.file_limit)
            assert self._out is not None
            self._out.write(chunk)
        else:
            self._buffer += chunk
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise _bad("表单字段过长", f"a form field is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._is_file:
            assert self._out is not None and self.result.file is not None
            self._out.close()
            self._out = None
            self.result.file.size = self._size
        elif self._name is not None:
            self.result.fields[self._name] = self._buffer.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_multipart(
    request: Request, *, dest_dir: str | None, file_limit: int, file_field: str = "file"
) -> Multipart:
    """Read a multipart/form-data body, the file part streamed to a temporary file under `dest_dir`."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise _bad("请以 multipart/form-data 上传文件", "send the file as multipart/form-data")
    collector = _Collector(dest_dir, file_field, file_limit)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    complete = False
    try:
        async for chunk in request.stream():  # ClientDisconnect if the client goes away
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if collector._out is not None:  # the body ended inside the file part
            raise _bad("上传内容不完整", "the multipart body ended before the file did")
        complete = True
    except FormParserError as e:
        raise _bad("multipart 格式有误", f"malformed multipart body: {e}") from e
    finally:
        if not complete:  # whatever went wrong (too large, malformed, disconnected, cancelled): no file left
            with contextlib.suppress(OSError):
                collector.close()
            collector.result.discard()
    return collector.result
