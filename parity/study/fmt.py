"""Numbers and tables as the study's reports print them (report.md, the terminal, the
per-example section)."""
from __future__ import annotations

import math


def fmt(x, spec=".3f", none="-"):
    """`x` formatted with `spec`; `none` for None and NaN, "inf" for +infinity; a value that is
    no number as it is."""
    if x is None:
        return none
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(xf):
        return "inf" if xf == math.inf else none
    return format(xf, spec)


def p_value(x) -> str:
    """A p-value: two significant digits, scientific below 0.001; "-" when there is none."""
    if x is None or not math.isfinite(float(x)):
        return "-"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def md_table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def plain_table(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
