"""A user's own traffic: trace files in two CSV formats, read with errors that name the line.

The header row says which format a file is in:

- Azure LLM inference trace (as published, 2023): `TIMESTAMP,ContextTokens,GeneratedTokens`,
  timestamps like `2023-11-16 18:15:46.6805900`; every request is interactive. The vendored
  Azure traces are read by this same parser (`workloads.azure_arrays`).
- Plain: `arrival_s,prompt_tokens,output_tokens`, optionally `class` and `deadline_s`, in any
  order and no other columns. `arrival_s` is seconds on any clock (Unix time will do: the
  replay starts at the first row); `class` is `interactive` (also when empty or absent) or
  `batch`; `deadline_s` is how many seconds after its arrival a batch request is due, as the
  Batch API's completion window and `slo.batchDeadlineS` count it (relative, so that cutting a
  window or compressing time keeps every request's allowance); empty means the pool's
  `slo.batchDeadlineS`. Interactive rows have latency SLOs, not deadlines: a deadline on one
  is an error.

Both: token counts are whole numbers >= 0 (0 is replayed as 1: every request has a prompt
token and generates one); arrivals never go back. A row earlier than the one before it is
rejected with its line, not sorted: an out-of-order file is most often two files joined or a
wrong column, which a silent sort would hide (`sort -t, -k1,1g` fixes a plain file that is
only unsorted). Blank lines are skipped.

Each problem is a `SourceError` at `file:line:column` (the column where the field starts).
Parsing is vectorised with numpy; only a failing column is scanned row by row to find the line.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from chiron_operator.sim.sourcefile import SourceError, at, read_text

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]
_T = TypeVar("_T", bound=np.generic)

AZURE_COLUMNS: Final = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PLAIN_REQUIRED: Final = ("arrival_s", "prompt_tokens", "output_tokens")
PLAIN_OPTIONAL: Final = ("class", "deadline_s")
CLASSES: Final = ("interactive", "batch")
_FORMATS: Final = (
    f"a plain trace's header is {','.join(PLAIN_REQUIRED)}[,{','.join(PLAIN_OPTIONAL)}]; "
    f"an Azure LLM inference trace's is {','.join(AZURE_COLUMNS)}"
)


@dataclass(frozen=True, slots=True)
class Trace:
    """A trace file's requests in file order, column by column (arrays are read-only).

    `arrival_s` counts from the first request; `deadline_after_s` is seconds after arrival,
    NaN where a row gives none (interactive rows, and batch rows that leave it to the pool).
    """

    arrival_s: Floats
    prompt_tokens: Ints
    output_tokens: Ints
    batch: Bools
    deadline_after_s: Floats


@dataclass(frozen=True, slots=True)
class _Table:
    """A CSV file's header and rows as text, with where each row is in the file."""

    path: str
    header: list[str]
    header_line: int
    rows: list[list[str]]
    row_lines: list[int]
    text_lines: list[str]

    def fail(self, row: int | None, field: int, message: str) -> SourceError:
        """A problem at `field` of row `row` (None: the header)."""
        line = self.header_line if row is None else self.row_lines[row]
        return at(self.path, line, _column(self.text_lines[line - 1], field), message)

    def cells(self, name: str) -> tuple[int, list[str]]:
        """The index of column `name` and its cells, stripped."""
        index = self.header.index(name)
        return index, [row[index].strip() for row in self.rows]


def _column(line: str, field: int) -> int:
    """1-based column where field `field` (0-based) of a CSV line starts; past the end if the
    line has fewer fields. Commas inside quotes do not separate fields."""
    if field == 0:
        return 1
    quoted, seen = False, 0
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            seen += 1
            if seen == field:
                return index + 2
    return len(line) + 1


def _read_table(path: str | Path) -> _Table:
    text_lines = read_text(path).splitlines()
    reader = csv.reader(text_lines)
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    row_lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header, header_line = [cell.strip() for cell in row], reader.line_num
        else:
            rows.append(row)
            row_lines.append(reader.line_num)
    if header is None:
        raise at(path, 1, 1, f"empty file: a trace starts with a header row ({_FORMATS})")
    table = _Table(str(path), header, header_line, rows, row_lines, text_lines)
    if not rows:
        raise at(path, header_line, 1, "no requests after the header row")
    for index, row in enumerate(rows):
        if len(row) != len(header):
            message = f"{len(row)} fields, but the header has {len(header)}"
            raise table.fail(index, min(len(row), len(header)), message)
    return table


def _first(mask: Bools) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _parsed(
    table: _Table, name: str, parse: Callable[[list[str]], NDArray[np.generic]], what: str
) -> NDArray[np.generic]:
    """Column `name` parsed as a whole; on failure, the first cell that fails on its own."""
    index, cells = table.cells(name)
    try:
        return parse(cells)
    except (ValueError, OverflowError):
        for row, cell in enumerate(cells):
            try:
                parse([cell])
            except (ValueError, OverflowError):
                raise table.fail(row, index, f"{name} {cell!r} is not {what}") from None
        raise


def _tokens(table: _Table, name: str) -> Ints:
    """A token column: whole numbers >= 0, read with 0 as 1."""
    values = _parsed(table, name, lambda c: np.array(c, dtype=np.int64), "a whole number")
    tokens = values.astype(np.int64)
    negative = _first(tokens < 0)
    if negative is not None:
        index = table.header.index(name)
        raise table.fail(negative, index, f"{name} {tokens[negative]} is negative")
    return _frozen(np.maximum(tokens, 1))


def _in_order(table: _Table, name: str, times: Floats) -> Floats:
    """`times` re-based to the first request; rejects a non-finite or decreasing one."""
    index = table.header.index(name)
    bad = _first(~np.isfinite(times))
    if bad is not None:
        raise table.fail(bad, index, f"{name} {table.rows[bad][index].strip()!r} is not finite")
    back = _first(np.diff(times) < 0)
    if back is not None:
        now, before = (table.rows[row][index].strip() for row in (back + 1, back))
        message = (
            f"{name} {now!r} is earlier than the previous request's {before!r} (line "
            f"{table.row_lines[back]}): rows must be in arrival order"
        )
        raise table.fail(back + 1, index, message)
    return _frozen(times - times[0])


def _frozen(array: NDArray[_T]) -> NDArray[_T]:
    # Parsed traces are cached and shared by every run: make accidental mutation an error.
    array.flags.writeable = False
    return array


def _azure_columns(table: _Table) -> tuple[Floats, Ints, Ints]:
    def stamps(cells: list[str]) -> NDArray[np.generic]:
        when = np.array([c.replace(" ", "T") for c in cells], dtype="datetime64[ns]")
        if np.isnat(when).any():
            raise ValueError("not a time")
        return when

    when = _parsed(table, "TIMESTAMP", stamps, "a date and time like 2023-11-16 18:15:46.68")
    seconds = (when - when[0]).astype(np.int64) / 1e9
    arrival_s = _in_order(table, "TIMESTAMP", seconds.astype(np.float64))
    return arrival_s, _tokens(table, "ContextTokens"), _tokens(table, "GeneratedTokens")


def read_azure_csv(path: str | Path) -> tuple[Floats, Ints, Ints]:
    """An Azure LLM inference trace: (seconds since its first request, prompt, output tokens)."""
    table = _read_table(path)
    if tuple(table.header) != AZURE_COLUMNS:
        raise table.fail(None, 0, f"not an Azure LLM inference trace: {_FORMATS}")
    return _azure_columns(table)


def _check_header(table: _Table) -> None:
    known = (*PLAIN_REQUIRED, *PLAIN_OPTIONAL)
    for index, name in enumerate(table.header):
        if name not in known:
            raise table.fail(None, index, f"unknown column {name!r}: {_FORMATS}")
        if table.header.index(name) != index:
            raise table.fail(None, index, f"column {name!r} appears twice")
    missing = [name for name in PLAIN_REQUIRED if name not in table.header]
    if missing:
        raise table.fail(None, 0, f"missing column {missing[0]!r}: {_FORMATS}")


def _classes(table: _Table) -> Bools:
    if "class" not in table.header:
        return _frozen(np.zeros(len(table.rows), dtype=np.bool_))
    index, cells = table.cells("class")
    for row, cell in enumerate(cells):
        if cell and cell not in CLASSES:
            raise table.fail(row, index, f"class {cell!r} is not one of: {', '.join(CLASSES)}")
    return _frozen(np.array([cell == "batch" for cell in cells], dtype=np.bool_))


def _deadlines(table: _Table, batch: Bools) -> Floats:
    if "deadline_s" not in table.header:
        return _frozen(np.full(len(table.rows), np.nan))
    index, cells = table.cells("deadline_s")

    def parse(given: list[str]) -> NDArray[np.generic]:
        return np.array([c or "nan" for c in given], dtype=np.float64)

    after = _parsed(table, "deadline_s", parse, "a number of seconds").astype(np.float64)
    given = np.array([bool(c) for c in cells], dtype=np.bool_)
    bad = _first(given & ~(np.isfinite(after) & (after > 0.0)))
    if bad is not None:
        message = f"deadline_s {cells[bad]!r} is not a positive number of seconds"
        raise table.fail(bad, index, message)
    interactive = _first(given & ~batch)
    if interactive is not None:
        message = "deadline_s on an interactive request (only batch requests have deadlines)"
        raise table.fail(interactive, index, message)
    return _frozen(after)


def _plain(table: _Table) -> Trace:
    _check_header(table)
    parse = _parsed(table, "arrival_s", lambda c: np.array(c, dtype=np.float64), "a number")
    arrival_s = _in_order(table, "arrival_s", parse.astype(np.float64))
    batch = _classes(table)
    return Trace(
        arrival_s,
        _tokens(table, "prompt_tokens"),
        _tokens(table, "output_tokens"),
        batch,
        _deadlines(table, batch),
    )


def read_trace(path: str | Path) -> Trace:
    """The trace in the file at `path`, in either format (see the module docstring).

    Parsed once per process while the file is unchanged (keyed by its modification time and
    size): a scenario is loaded, checked and replayed several times per run.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _read_trace(str(resolved), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_trace(path: str, _mtime_ns: int, _size: int) -> Trace:
    table = _read_table(path)
    if tuple(table.header) == AZURE_COLUMNS:
        arrival_s, prompts, outputs = _azure_columns(table)
        batch = _frozen(np.zeros(len(arrival_s), dtype=np.bool_))
        return Trace(arrival_s, prompts, outputs, batch, _frozen(np.full(len(batch), np.nan)))
    return _plain(table)
