"""Streaming multipart/form-data: the file part goes straight to a temporary file, never into memory.

    form = await receive_multipart(request, dest_dir=None, file_limit=200 * 1024 * 1024)
    try:
        form.fields["quarter"], form.file.path, form.file.name, form.file.size
    finally:
        form.discard()

The size limit is enforced while the bytes arrive (`UploadTooLarge` the moment the file passes it, and the
partial file is deleted). At most one file part is accepted; text fields are small and few.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from aggregator.web.problems import BadRequest, UploadTooLarge

MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


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
        fd, tmp = tempfile.mkstemp(prefix="certq-upload-", suffix=suffix if _SAFE_SUFFIX.match(suffix) else "",
                                   dir=self.dest_dir)
        self._out = os.fdopen(fd, "wb")
        ctype = self._headers.get(b"content-type")
        self.result.file = SavedFile(Path(tmp), display[:255], 0, ctype.decode("latin-1") if ctype else None)
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
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        collector.close()
        collector.result.discard()
        raise _bad("multipart 格式有误", f"malformed multipart body: {e}") from e
    except BaseException:
        collector.close()
        collector.result.discard()
        raise
    if collector._out is not None:  # the body ended inside the file part
        collector.close()
        collector.result.discard()
        raise _bad("上传内容不完整", "the multipart body ended before the file did")
    return collector.result
