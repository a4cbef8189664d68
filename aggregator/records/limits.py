"""How much an uploaded file may make the importer do: rows, columns, cell length, a workbook's zip sizes, and
the memory and time of the process that reads a workbook.

    limits = ImportLimits.from_env()          # the defaults below, overridden by CERTQ_IMPORT_* variables
    ImportLimits(max_rows=100_000)            # e.g. in tests

Each field has an environment variable named after it: `CERTQ_IMPORT_MAX_ROWS`, `CERTQ_IMPORT_MAX_COLUMNS`,
`CERTQ_IMPORT_MAX_CELL_CHARS`, `CERTQ_IMPORT_MAX_ZIP_ENTRIES`, `CERTQ_IMPORT_MAX_ENTRY_BYTES`,
`CERTQ_IMPORT_MAX_TOTAL_BYTES`, `CERTQ_IMPORT_MAX_RATIO`, `CERTQ_IMPORT_RATIO_MIN_BYTES`,
`CERTQ_IMPORT_MEMORY_BYTES`, `CERTQ_IMPORT_CPU_S`, `CERTQ_IMPORT_TIMEOUT_S`, `CERTQ_IMPORT_COLUMNAR_MIN_BYTES`.
Sizes take a K/M/G suffix (binary: `3G` is 3 GiB). A malformed value raises `ConfigError` naming the variable.

Where the defaults come from (measured 2026-12 on python-calamine 0.9.1, files from `bench/bench_records.py`'s
generator: 12 columns of certificate-like data):

- Compression ratio (uncompressed / compressed) of the parts of real-shaped XLSX files: the worksheet of 100,000
  and 1,000,000 rows written by openpyxl (inline strings) 10.6-10.7; written as Excel does (shared strings,
  date cells as serials) 7.9, its sharedStrings.xml 5.5; the same row 100,000 times but for the number 18.4;
  with styled empty cells out to column Z 16.2; 100,000 rows of 12 identical cells 18.1; a million empty
  `<row>`s 11.4; small parts (theme, styles) 6.5 at most. A stream of spaces deflates 1,028:1, the most
  DEFLATE can do. `max_ratio` 100 is 5x the most compressible legitimate sheet and a tenth of a bomb's ratio.
- Uncompressed size: 885 bytes of sheet XML a row (openpyxl), 441 + 77 (Excel-like); 1,048,576 rows (Excel's
  own maximum) are 0.55-0.93 GB, 1.3 GB with styled empty cells. Hence 2 GiB an entry and 3 GiB in all.
- Memory: python-calamine keeps the whole sheet; 1,000,000 rows x 12 columns peak at 1.43 GB of address space
  (VmPeak; VmHWM 1.23 GB), loaded in 18.7 s (14 s CPU). 3 GiB covers Excel's maximum row count at ~16 columns.
  A hostile sheet (one cell at XFD1048576) asks for 512 GiB and is refused at once.
- CPU: that 1,000,000-row sheet costs ~25 s CPU in the reader (load, then rows to JSON); 120 s is ~5x.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aggregator.config import ConfigError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
ENV_PREFIX = "CERTQ_IMPORT_"
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:I?B)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": KiB, "M": MiB, "G": GiB}


class ImportLimits(BaseModel):
    """Limits on one upload. Rows, columns and cells apply to CSV and workbooks alike; the rest to workbooks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rows: int = Field(2_000_000, ge=1)  # data rows (an XLSX sheet holds at most 1,048,576)
    max_columns: int = Field(256, ge=8, le=16_384)  # cells of a row up to the last non-empty one
    max_cell_chars: int = Field(32_767, ge=16)  # Excel's own limit of a cell; a longer one is a row problem
    max_zip_entries: int = Field(10_000, ge=8)  # files inside an XLSX/XLSM/XLSB/ODS
    max_entry_bytes: int = Field(2 * GiB, ge=MiB)  # one file inside, uncompressed (as the zip directory says)
    max_total_bytes: int = Field(3 * GiB, ge=MiB)  # all of them
    max_ratio: float = Field(100.0, ge=2)  # uncompressed / compressed of an entry of at least ratio_min_bytes
    ratio_min_bytes: int = Field(MiB, ge=0)  # smaller entries may compress as they like: the sizes bound them
    memory_bytes: int = Field(3 * GiB, ge=32 * MiB)  # RLIMIT_AS of the workbook reader process
    cpu_s: int = Field(120, ge=1)  # RLIMIT_CPU of the workbook reader process
    timeout_s: float = Field(120.0, gt=0)  # longest wait for the reader's next rows (wall clock)
    # Not a limit, a speed-up: plain UTF-8 CSVs of this size or more are validated column by column in polars
    # (`columnar`), with the same report
    columnar_min_bytes: int = Field(4 * MiB, ge=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImportLimits:
        """The defaults, overridden by `CERTQ_IMPORT_<FIELD>` variables; a bad value raises `ConfigError`."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        problems: list[str] = []
        for name, info in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper(), "").strip()
            if not raw:
                continue
            if info.annotation is int:
                m = _SIZE.match(raw)
                if m is None:
                    problems.append(f"{ENV_PREFIX}{name.upper()}: not a whole number: {raw!r}")
                    continue
                values[name] = int(m.group(1)) * _FACTORS[m.group(2).upper()]
            else:
                values[name] = raw
        if not problems:
            try:
                return cls.model_validate(values)
            except ValidationError as e:
                problems = [f"{ENV_PREFIX}{str(x['loc'][0]).upper()}: {x['msg']}" for x in e.errors()]
        raise ConfigError(problems)
