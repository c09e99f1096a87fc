"""The one result row of the shared-weight checks (parity.numerics and parity.policies), and the
report that collects, prints and writes them: one row per check, with its bound, margin and the
rule it passed by (its tolerance, the float32 noise floor, exactness, or a derived bound)."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from airbench_common.files import write_json_atomic

from .tolerances import NOISE_FACTOR, TOLERANCES, compare


@dataclass
class Row:
    recipe: str
    check: str
    tol_name: str                 # parity.numerics.tolerances' name; "derived": add_value's bound
    max_abs: float                # max |jax - torch| (add_value: the measured relative value)
    rel: float                    # max_abs / scale
    scale: float
    tol: str                      # the rule, as text
    ok: bool
    impl: str = ""
    note: str = ""
    floor: float = float("nan")   # float32 noise floor: max |float32 - float64| of either side
    bound: float = float("nan")   # the largest max_abs that passes (tolerance or
    #                               NOISE_FACTOR*floor; a lower bound's: the smallest)
    margin: float = float("nan")  # bound / max_abs (a lower bound's: max_abs / bound): > 1
    #                               passes; near 1 passes by a hair
    via: str = ""                 # what the row passed by: "tol", "floor", "exact", "info"
    #                               (reported, not asserted); "" if failed

    def failure_line(self) -> str:
        return (f"FAIL {self.recipe} {self.check} [{self.impl}] max_abs {self.max_abs:.3e} rel "
                f"{self.rel:.3e} tol {self.tol} {self.note}")


def finish_row(row: Row, tol_bound: float, allow_floor: bool = True) -> Row:
    """Set row.bound/margin/via/ok from the tolerance's bound and the row's float32 floor (the
    floor is reported either way; allow_floor=False: the row must pass by its tolerance)."""
    bound = tol_bound if np.isfinite(tol_bound) else 0.0
    floor_bound = NOISE_FACTOR * row.floor if allow_floor and np.isfinite(row.floor) else 0.0
    row.bound = max(bound, floor_bound)
    m = row.max_abs
    row.margin = float("inf") if m == 0 else (row.bound / m if np.isfinite(m) else 0.0)
    row.ok = bool(np.isfinite(m) and m <= row.bound)
    row.via = "" if not row.ok else ("tol" if m <= bound else "floor")
    return row


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def add(self, recipe, check, a, b, tol_name, impl="", scale=None, note="", ref64=None,
            jax64=None, allow_floor=True):
        """Row comparing JAX `a` with torch `b`; ref64/jax64: the same quantity computed in
        float64 by torch/JAX from the same inputs, which set the float32 noise floor (see
        NOISE_FACTOR): floor = max(max|b - ref64|, max|a - jax64|)."""
        res = compare(a, b, tol_name, scale=scale)
        tol = TOLERANCES[tol_name]
        floor = float("nan")
        if ref64 is not None:
            def err(x, x64):
                return float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(x64, np.float64)),
                                    initial=0.0))
            floor = err(b, ref64) if jax64 is None else max(err(b, ref64), err(a, jax64))
        row = Row(recipe, check, tol_name, res["max_abs"], res["rel"], res["scale"], res["tol"],
                  False, impl, note or res.get("note", ""), floor)
        finish_row(row, tol.atol + tol.rtol * res["scale"], allow_floor)
        self.rows.append(row)
        return row

    def flush_failures(self, start: int = 0, stream=None, prefix: str = "[numerics] ") -> int:
        """Print the failed rows from index `start` on (to `stream`, default stderr); returns
        len(rows)."""
        for r in self.rows[start:]:
            if not r.ok:
                print(prefix + r.failure_line(), file=stream or sys.stderr, flush=True)
        return len(self.rows)

    def add_exact(self, recipe, check, ok: bool, note="", tol_name="roundtrip"):
        """Row of a check that holds exactly or not at all (bit-identical arrays, a dtype)."""
        self.rows.append(Row(recipe, check, tol_name, 0.0 if ok else float("inf"),
                             0.0 if ok else float("inf"), 0.0, "exact", bool(ok), "", note,
                             bound=0.0, margin=float("inf") if ok else 0.0,
                             via="exact" if ok else ""))

    def add_value(self, recipe, check, value: float, bound: float, *, lower=False, asserted=True,
                  impl="", note="", floor=float("nan")):
        """Row of one measured relative value (scale 1) against a bound derived elsewhere (e.g.
        from the formats, parity.numerics.policies): passes iff value <= bound, or with
        lower=True iff value >= bound (a lower bound); asserted=False: reported, never failing
        (via "info"). `floor`: the larger of the two sides' own errors against float64."""
        value, bound = float(value), float(bound)
        ok = bool(np.isfinite(value) and (value >= bound if lower else value <= bound))
        passes = ok or not asserted
        if lower:
            margin = value / bound if bound > 0 else float("inf")
        else:
            margin = float("inf") if value == 0 else bound / value
        row = Row(recipe, check, "derived", value, value, 1.0,
                  f"{'>=' if lower else '<='} {bound:.2e}", passes, impl, note, float(floor),
                  bound, margin, ("tol" if ok else "info") if passes else "")
        self.rows.append(row)
        return row

    def add_worst(self, recipe, check, a: dict, b: dict, names, tol_name, impl="", ref64=None,
                  note="", jax64=None, allow_floor=True):
        """One row for several tensors: the worst one's numbers; ok iff every tensor passes."""
        rows = []
        for k in names:
            self.add(recipe, check, a[k], b[k], tol_name, impl,
                     ref64=None if ref64 is None else ref64[k],
                     jax64=None if jax64 is None else jax64[k], allow_floor=allow_floor)
            rows.append((k, self.rows.pop()))
        # the tensor closest to (or furthest past) its bound speaks for the group
        worst_k, worst = min(rows, key=lambda kr: (kr[1].margin, -kr[1].rel))
        worst.ok = all(r.ok for _, r in rows)
        worst.note = f"{len(rows)} tensors, worst {worst_k}" + (f"; {note}" if note else "")
        self.rows.append(worst)
        return worst

    @property
    def failures(self):
        return [r for r in self.rows if not r.ok]

    def table(self, check_width: int = 44) -> str:
        w = check_width
        lines = [f"{'recipe':<18} {'check':<{w}} {'impl':<6} {'max_abs':>9} {'rel':>9} "
                 f"{'f32floor':>9} {'tolerance':<19} {'margin':>7} {'':10}"]
        lines.append("-" * len(lines[0]))
        for r in self.rows:
            fl = "" if not np.isfinite(r.floor) else f"{r.floor:9.2e}"
            mg = "inf" if r.margin == float("inf") else f"{r.margin:7.2f}"
            verdict = f"ok ({r.via})" if r.ok else "FAIL"
            lines.append(f"{r.recipe:<18} {r.check[:w]:<{w}} {r.impl:<6} {r.max_abs:9.2e} "
                         f"{r.rel:9.2e} {fl:>9} {r.tol:<19} {mg:>7} {verdict:<10}"
                         + (f"  ({r.note})" if r.note else ""))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return dict(meta=self.meta, rows=[asdict(r) for r in self.rows],
                    n_fail=len(self.failures), n_rows=len(self.rows))

    def write(self, path) -> None:
        """The report as JSON (to_json), atomically: non-finite floats as strings."""
        write_json_atomic(path, self.to_json())
