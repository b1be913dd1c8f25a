"""Markdown for people: numbers, confidence intervals and tables, and reading the CSVs a report is built
from. Public: `dualbench study` builds its sections with the same helpers."""
import math
from pathlib import Path

import numpy as np


def read_optional(path):
    """A CSV as a DataFrame, or None when absent or empty; malformed files are a one-line UserError."""
    from dualbench.common.results import read_csv
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    frame = read_csv(path)
    return frame if len(frame) else None


def fmt(value, digits=3):
    """Numbers for people: 12,345 for large values, 3 significant digits otherwise, n/a for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_ci(estimate, lo, hi, digits=3, ratio=False):
    """'estimate [lo, hi]'; ratios with 3 decimals so that 0.97 and 1.05 band edges read exactly."""
    def one(v):
        return f"{v:.3f}" if ratio else fmt(float(v), digits)
    if not math.isfinite(estimate):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{one(estimate)} [CI n/a]"
    return f"{one(estimate)} [{one(lo)}, {one(hi)}]"


def markdown_table(frame):
    if frame is None or not len(frame):
        return "_(no rows)_\n"
    cols = [str(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def safe_name(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))
