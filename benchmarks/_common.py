"""Shared helpers of the benchmarks: result rows, the markdown table and its markers.

Every ``bench_*.py`` prints its table between two HTML comments::

    <!-- bench:NAME:start -->
    ...markdown...
    <!-- bench:NAME:end -->

``benchmarks/run`` copies each such block into ``benchmarks/README.md`` (replacing the
block of the same NAME, appending new ones), so a new benchmark needs no runner change.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


@dataclass
class Row:
    """One line of a result table.

    ``higher_is_better`` decides how ``target`` is checked: ``ours >= target`` or
    ``ours <= target``. ``ratio`` is always ours / baseline.
    """

    benchmark: str
    ours: float
    unit: str
    baseline: float | None = None
    target: float | None = None
    higher_is_better: bool = False
    digits: int = 1

    @property
    def ok(self) -> bool | None:
        if self.target is None:
            return None
        if self.higher_is_better:
            return self.ours >= self.target
        return self.ours <= self.target

    def _fmt(self, value: float) -> str:
        return f"{value:,.{self.digits}f} {self.unit}".strip()

    def cells(self) -> list[str]:
        baseline = "—" if self.baseline is None else self._fmt(self.baseline)
        ratio = (
            "—" if self.baseline in (None, 0) else f"{self.ours / self.baseline:.2f}x"  # type: ignore[operator]
        )
        if self.target is None:
            target = "—"
        else:
            target = ("≥ " if self.higher_is_better else "≤ ") + self._fmt(self.target)
        ok = {None: "—", True: "✅", False: "❌"}[self.ok]
        return [self.benchmark, self._fmt(self.ours), baseline, ratio, target, ok]


class NegativeOverhead(Row):
    """A failed row: a path measured faster than the driver it wraps."""

    def __init__(self, benchmark: str) -> None:
        super().__init__(benchmark, float("nan"), "", target=0.0)

    @property
    def ok(self) -> bool | None:
        return False

    def cells(self) -> list[str]:
        return [self.benchmark, "negative overhead", "—", "—", "≥ 0 ms", "❌"]


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| benchmark | ours | baseline | ratio | target | ok |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def machine_line() -> str:
    """Where and when the numbers were taken."""
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load avg {os.getloadavg()[0]:.2f} at start"
    return (
        f"{_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}{load}"
    )


def emit(name: str, title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> bool:
    """Print the marked block; returns True when every row with a target meets it."""
    parts = [f"<!-- bench:{name}:start -->", f"### {title}", "", f"_{machine_line()}_", ""]
    parts.append(markdown_table(rows))
    if notes:
        parts.append("")
        parts += [f"- {n}" for n in notes]
    parts.append(f"<!-- bench:{name}:end -->")
    print("\n".join(parts))
    sys.stdout.flush()
    return all(r.ok is not False for r in rows)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def noise(values: list[float]) -> float:
    """Twice the standard error of a median, from the median absolute deviation."""
    m = median(values)
    mad = median([abs(v - m) for v in values])
    return 2 * 1.4826 * mad * 1.2533 / max(1, len(values)) ** 0.5


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def log(msg: str) -> None:
    """Progress goes to stderr so stdout carries only the table."""
    print(msg, file=sys.stderr, flush=True)
