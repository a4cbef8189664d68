"""certq's home: one folder for its state and settings, which every command reads.

    home = Home.load()            # CERTQ_HOME, else ./certq-data
    home.database_url             # where the records, keys and audit log are
    home.redis_url                # None: the in-process cache
    home.export()                 # put the home's settings in this process's environment (for child processes
                                  # and for the ${VAR} references of config/sources/*.toml)

The home holds the SQLite database (`certq.sqlite3`) unless a database URL is set, and an optional
`settings.toml`:

    database_url = "postgresql://certq@db.internal/certq"
    redis_url = "redis://cache.internal:6379/0"
    config_dir = "/etc/certq"

    [environment]                 # values for the ${NAME} references of config/sources/*.toml, CERTQ_WEB_* ...
    CERTQ_MEM_URL = "http://127.0.0.1:18701"

Each value is taken from the environment variable of the same name first (CERTQ_DATABASE_URL, CERTQ_REDIS_URL,
CERTQ_CONFIG_DIR; CERTQ_DB_PATH names the SQLite file), then from settings.toml, then the default. This module
is the one place that reads those variables. `certq demo` writes a home of its own (certq-data/demo) that
records where its simulated sites listen, so that `CERTQ_HOME=certq-data/demo certq lookup ...` in another
terminal asks the same sites and the same database.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_HOME = "certq-data"
SETTINGS_FILE = "settings.toml"
DATABASE_FILE = "certq.sqlite3"


class HomeError(ValueError):
    """settings.toml cannot be read or says something invalid; the message names the file and the key."""


class HomeSettings(BaseModel):
    """What settings.toml may say."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = None
    redis_url: str | None = None
    config_dir: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)

    @field_validator("environment")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.isidentifier() or not name.isupper():
                raise ValueError(f"{name!r} is not an environment variable name (upper case, letters, digits, _)")
        return value


class Home(BaseModel):
    """The home in use, with every setting resolved (environment, then settings.toml, then defaults)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    database_url: str
    redis_url: str | None = None
    config_dir: Path | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    settings_file: Path | None = None  # the settings.toml read, if there is one

    @classmethod
    def load(cls, path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Home:
        env = os.environ if environ is None else environ
        root = Path(path or env.get("CERTQ_HOME", "").strip() or DEFAULT_HOME).expanduser()
        file = root / SETTINGS_FILE
        saved = read_settings(file) if file.is_file() else HomeSettings()

        def pick(name: str, from_file: str | None) -> str | None:
            return env.get(name, "").strip() or from_file or None

        database_url = pick("CERTQ_DATABASE_URL", saved.database_url)
        if database_url is None:
            db_path = env.get("CERTQ_DB_PATH", "").strip()
            database_url = str(Path(db_path).expanduser().resolve() if db_path else (root / DATABASE_FILE).resolve())
        config_dir = pick("CERTQ_CONFIG_DIR", saved.config_dir)
        if config_dir is not None and saved.config_dir == config_dir and not Path(config_dir).is_absolute():
            config_dir = str(root / config_dir)  # relative to the home, as written in its settings.toml
        return cls(
            path=root,
            database_url=database_url,
            redis_url=pick("CERTQ_REDIS_URL", saved.redis_url),
            config_dir=Path(config_dir) if config_dir else None,
            environment=saved.environment,
            settings_file=file if file.is_file() else None,
        )

    def export(self, environ: dict[str, str] | None = None) -> None:
        """Put the home's settings into the environment where it does not say otherwise, so that child
        processes (server workers) and the ${NAME} references of the sources' config see them."""
        env = os.environ if environ is None else environ
        env.setdefault("CERTQ_HOME", str(self.path))
        env.setdefault("CERTQ_DATABASE_URL", self.database_url)
        if self.redis_url:
            env.setdefault("CERTQ_REDIS_URL", self.redis_url)
        if self.config_dir:
            env.setdefault("CERTQ_CONFIG_DIR", str(self.config_dir))
        for name, value in self.environment.items():
            env.setdefault(name, value)


def read_settings(file: Path) -> HomeSettings:
    try:
        raw: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise HomeError(f"{file}: cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise HomeError(f"{file}: not valid TOML: {e}") from None
    try:
        return HomeSettings.model_validate(raw)
    except ValidationError as e:
        problems = [f"{file}: {'.'.join(map(str, x['loc'])) or '(top level)'}: {x['msg']}" for x in e.errors()]
        raise HomeError("; ".join(problems)) from None


def write_settings(path: Path, settings: HomeSettings) -> Path:
    """Write a home's settings.toml (the demo records its sandbox here)."""
    path.mkdir(parents=True, exist_ok=True)
    lines = ["# certq home settings (see aggregator/home.py). Environment variables override these."]
    for key in ("database_url", "redis_url", "config_dir"):
        value = getattr(settings, key)
        if value:
            lines.append(f"{key} = {_toml_string(value)}")
    if settings.environment:
        lines += ["", "[environment]"]
        lines += [f"{name} = {_toml_string(value)}" for name, value in sorted(settings.environment.items())]
    file = path / SETTINGS_FILE
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
