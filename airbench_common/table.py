"""Upstream airbench's per-epoch log table, the one format both implementations print:

    ---------------------------------------------------------------------------------------
    |  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |
    ---------------------------------------------------------------------------------------
    |       0  |      0  |      1.2345  |     0.5000  |   0.6000  |               |        3.1416  |
"""
from __future__ import annotations

from typing import Callable

COLUMNS = ["run   ", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "time_seconds"]


class Table:
    """Prints upstream's table through `log` (print by default): head() once, row(...) per epoch
    with any of the column names as keywords (floats with 4 decimals, None blank), and
    row(final=True, ...) for the closing evaluation row and rule."""

    def __init__(self, log: Callable[[str], object] = print):
        self.log = log

    def _line(self, cells) -> str:
        return "".join(f"|  {c}  " for c in cells) + "|"

    def head(self) -> None:
        line = self._line(COLUMNS)
        self.log("-" * len(line))
        self.log(line)
        self.log("-" * len(line))

    def row(self, final: bool = False, **values) -> None:
        cells = []
        for col in COLUMNS:
            v = values.get(col.strip())
            s = "" if v is None else (f"{v:0.4f}" if isinstance(v, float) else str(v))
            cells.append(s.rjust(len(col)))
        line = self._line(cells)
        self.log(line)
        if final:
            self.log("-" * len(line))
