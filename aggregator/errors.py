"""The one table that turns typed errors into what people read (Chinese first, then English).

Source error kinds appear in answers; exceptions raised to the CLI and the web layer are mapped here to an
exit code / HTTP status and a message, so no caller invents its own wording.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.config import ConfigError
from aggregator.home import HomeError
from aggregator.models import ErrorKind
from aggregator.numbers import NumberError

SOURCE_ERROR_TEXT: dict[ErrorKind, tuple[str, str]] = {
    ErrorKind.TIMEOUT: ("数据源响应超时", "the source did not answer in time"),
    ErrorKind.BLOCKED: ("数据源拒绝访问", "the source refused access"),
    ErrorKind.CAPTCHA: ("数据源要求人工验证码", "the source asks a person to solve a captcha"),
    ErrorKind.RATE_LIMITED: ("查询过于频繁，数据源限流", "the source is rate limiting us"),
    ErrorKind.UPSTREAM_ERROR: ("数据源出错或维护中", "the source failed or is under maintenance"),
    ErrorKind.PARSE_ERROR: ("数据源页面格式已变化，无法解析", "the source's answer could not be parsed"),
    ErrorKind.CIRCUIT_OPEN: ("数据源近期连续失败，暂停查询", "the source failed repeatedly and is paused"),
}


@dataclass(frozen=True)
class UserError:
    status: int  # HTTP status
    exit_code: int  # CLI exit code
    title: str
    zh: str
    en: str

    @property
    def text(self) -> str:
        return f"{self.zh} ({self.en})"


def describe(exc: BaseException) -> UserError:
    """Map an exception to what the user is told. Unknown exceptions get a generic, non-leaking text."""
    if isinstance(exc, NumberError):
        zh, _, en = exc.reason.partition(" (")
        return UserError(422, 2, "invalid-number", zh, en.rstrip(")") or exc.reason)
    if isinstance(exc, (ConfigError, HomeError)):
        return UserError(500, 78, "invalid-configuration", "配置有误", str(exc))
    # The most specific registered class wins, whatever the order of registration (as Starlette looks up its
    # exception handlers: along the exception's MRO).
    for cls in type(exc).__mro__:
        entry = _EXTRA.get(cls)
        if entry is not None:
            status, code, title, zh, en = entry
            return UserError(status, code, title, zh.format(exc=exc), en.format(exc=exc))
    return UserError(500, 70, "internal-error", "服务内部错误，请稍后再试", "internal error, please try again later")


# Exceptions defined further down the import graph register their text here (records, web).
_EXTRA: dict[type[BaseException], tuple[int, int, str, str, str]] = {}


def register(cls: type[BaseException], status: int, exit_code: int, title: str, zh: str, en: str) -> None:
    _EXTRA[cls] = (status, exit_code, title, zh, en)


def registered() -> list[tuple[str, int, str, str]]:
    """Every registered error as (title, HTTP status, zh, en), the texts unformatted: for documentation."""
    builtin = [
        ("invalid-number", 422, "编号无效", "the number cannot be a certificate or ID number"),
        ("internal-error", 500, "服务内部错误，请稍后再试", "internal error, please try again later"),
    ]
    return builtin + [(title, status, zh, en) for status, _code, title, zh, en in _EXTRA.values()]
