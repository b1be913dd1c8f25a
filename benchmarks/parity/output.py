"""Parity results as tables: OUT/parity.csv (one row per comparison), OUT/parity.md and the terminal.

One line per pair (task or model pair) says pass, FAIL (the first check, module or step out of
tolerance and its cause) or inconclusive (a vacuous comparison); then the worst row per check.
"""
from pathlib import Path

import numpy as np

from dualbench.parity.pair import DROPOUT_POLICY
from dualbench.parity.rows import COLUMNS, FAILED, TOLERANCES, describe

RESULTS = ("pass", "FAIL", "inconclusive")


def summarise(rows):
    """One line per pair: pass / FAIL / inconclusive, and the first check, module or step that leaves
    tolerance."""
    import pandas as pd
    frame = pd.DataFrame(rows, columns=COLUMNS)
    out = []
    for task, group in frame.groupby("task", sort=False):
        bad = group[group.status.isin(FAILED)]
        expected = group[group.status == "expected"]
        vacuous = group[group.status == "vacuous"]
        # the first row that is a cause itself, not one that follows from another (a Transformer stack whose
        # part differs is recorded before that part)
        own = bad[~bad.cause.fillna("").str.startswith("follows from")]
        first = (own if len(own) else bad).iloc[0] if len(bad) else None
        cause = ""
        if first is not None:
            explained = bad[bad.cause.fillna("") != ""]
            cause = first.cause or (explained.cause.iloc[0] if len(explained) else
                                    "unexplained: no known convention difference matches")
        elif len(vacuous):
            cause = vacuous.cause.iloc[0]
        result = "FAIL" if first is not None else ("inconclusive" if len(vacuous) else "pass")
        independent = bad[bad.cause.fillna("").str.startswith("an independent difference")]
        out.append({"task": task, "result": result,
                    "first_failure": describe(first) if first is not None else "",
                    "cause": cause, "rows": len(group), "failed": len(bad),
                    "expected_differences": "; ".join(sorted(set(expected.cause.str.split(":").str[0]))),
                    "also": [f"{describe(r)}: {r.cause}" for _, r in independent.drop_duplicates("name").iterrows()]})
    return pd.DataFrame(out, columns=["task", "result", "first_failure", "cause", "rows", "failed",
                                      "expected_differences", "also"])


def check_table(frame):
    """Per pair and check/mode: the worst row (largest max_rel)."""
    import pandas as pd
    out = []
    frame = frame[frame.status != "vacuous"]
    for (task, check, mode), group in frame.groupby(["task", "check", "mode"], sort=False):
        ranked = group.assign(_r=group.max_rel.fillna(np.inf)).sort_values("_r", ascending=False)
        worst = ranked.iloc[0]
        statuses = set(group.status)
        status = next((s for s in ("FAIL", "expected", "noise", "skipped") if s in statuses or
                       (s == "FAIL" and statuses & set(FAILED))), "ok")
        out.append({"task": task, "check": check, "mode": mode, "n": len(group), "worst": worst["name"] +
                    (f"@{int(worst.step)}" if not pd.isna(worst.step) else ""),
                    "max_abs": group.max_abs.max(), "max_rel": group.max_rel.max(), "status": status})
    return pd.DataFrame(out, columns=["task", "check", "mode", "n", "worst", "max_abs", "max_rel", "status"])


def error_growth(frame):
    """Per pair and forward mode, how the relative error grows from module to module: at the first and
    the last module, and the module that amplified the difference it received the most (so that
    rounding growing through a deep net is not taken for one module's bug)."""
    import pandas as pd
    out = []
    forward = frame[(frame.check == "forward") & frame["mode"].isin(["eval", "train"])]
    for (task, mode), group in forward.groupby(["task", "mode"], sort=False):
        rel = pd.to_numeric(group.max_rel, errors="coerce")
        inp = pd.to_numeric(group.input_rel, errors="coerce")
        gain = rel / inp.where(inp > 1e-12)
        if rel.notna().sum() < 2:
            continue
        line = {"task": task, "mode": mode, "first": rel.iloc[0], "last": rel.iloc[-1], "worst": rel.max(),
                "most_amplifying": "", "gain": np.nan}
        if gain.notna().any():
            at = gain.idxmax()
            line.update(most_amplifying=group.loc[at, "name"], gain=float(gain.loc[at]))
        out.append(line)
    return pd.DataFrame(out, columns=["task", "mode", "first", "last", "worst", "most_amplifying", "gain"])


def as_frame(rows):
    import pandas as pd
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    return frame


def write_outputs(rows, out_dir, pairs_info=None):
    """Write parity.csv and parity.md atomically; returns (rows frame, summary, worst per check).
    pairs_info: {pair name: lines about its mapping} for model pairs."""
    from dualbench.common.fsutil import atomic_write_text
    from dualbench.common.results import write_table
    frame = as_frame(rows)
    out_dir = Path(out_dir)
    write_table(out_dir / "parity.csv", frame)
    summary = summarise(rows)
    checks = check_table(frame)
    atomic_write_text(out_dir / "parity.md", markdown(frame, summary, checks, pairs_info))
    return frame, summary, checks


def fmt(value):
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2e}"


def markdown(frame, summary, checks, pairs_info=None):
    lines = ["# dualbench parity", ""]
    if len(frame):
        lines.append(f"torch {frame.torch_version.iloc[0]}, paddle {frame.paddle_version.iloc[0]}, CPU. "
                     f"Dropout: {DROPOUT_POLICY}.")
    lines += ["", "max_rel = max|torch - paddle| / max|torch|; within tolerance when max_abs <= atol + rtol * max|torch|.",
              "", "## Results", "", "| pair | batch | steps | result | first failure | cause | expected differences |",
              "|---|---|---|---|---|---|---|"]
    sizes = frame.groupby("task", sort=False)[["batch_size", "steps"]].first()
    for _, s in summary.iterrows():
        cause = s.cause + "".join(f" **Also at** {also}" for also in s.also)
        lines.append(f"| {s.task} | {sizes.batch_size[s.task]} | {sizes.steps[s.task]} | {s.result} | "
                     f"{s.first_failure} | {cause} | {s.expected_differences} |")
    for name, info in (pairs_info or {}).items():
        lines += ["", f"## Mapping: {name}", ""] + [f"- {line}" for line in info]
    growth = error_growth(frame)
    if len(growth):
        lines += ["", "## Error growth through the network", "",
                  "Relative error of the module outputs (max_rel) at the first and the last compared module, the "
                  "worst, and the module that multiplied the difference it received (input_rel) the most.", "",
                  "| pair | mode | first | last | worst | most amplifying module | gain |", "|---|---|---|---|---|---|---|"]
        for _, g in growth.iterrows():
            gain = "" if np.isnan(g.gain) else f"x{g.gain:.3g}"
            lines.append(f"| {g.task} | {g['mode']} | {fmt(g.first)} | {fmt(g['last'])} | {fmt(g.worst)} | "
                         f"{g.most_amplifying} | {gain} |")
    lines += ["", "## Largest error per check", "", "| pair | check | mode | rows | worst | max_abs | max_rel | status |",
              "|---|---|---|---|---|---|---|---|"]
    for _, c in checks.iterrows():
        lines.append(f"| {c.task} | {c.check} | {c['mode']} | {c.n} | {c.worst} | {fmt(c.max_abs)} | "
                     f"{fmt(c.max_rel)} | {c.status} |")
    named = conventions_named(frame)
    if named:
        lines += ["", "## Conventions named", "", "Each cause above was proven by a replay with the convention "
                  "flipped (see the cause's numbers).", "", "| convention | torch | paddle | fix |", "|---|---|---|---|"]
        lines += [f"| {title} | {t} | {p} | {fix} |" for title, t, p, fix in named]
    lines += ["", "## Tolerances", "", "| check | atol | rtol |", "|---|---|---|"]
    for check, (atol, rtol) in TOLERANCES.items():
        lines.append(f"| {check} | {atol:g} | {rtol:g} |")
    expected = frame[frame.status.isin(["expected", "noise"])]
    if len(expected):
        lines += ["", "## Expected differences", ""]
        for (task, status), group in expected.groupby(["task", "status"], sort=False):
            lines.append(f"- {task} ({status}, {len(group)} rows, e.g. {describe(group.iloc[0])}): {group.cause.iloc[0]}")
    return "\n".join(lines) + "\n"


def conventions_named(frame):
    """The conventions (parity.conventions.table) whose title starts a cause in the rows."""
    from dualbench.parity.conventions import table
    causes = " ".join(frame.cause.dropna().astype(str))
    return [row for row in table() if f"{row[0]}:" in causes]


def terminal_report(summary, checks, echo):
    """The worst row per check, then one line per pair."""
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_rows", 2000):
        echo(checks.to_string(index=False, formatters={"max_abs": fmt, "max_rel": fmt}))
        echo("")
        for _, s in summary.iterrows():
            line = f"{s.task}: {s.result}"
            if s.result == "FAIL":
                line += f" at {s.first_failure}: {s.cause}"
                line += "".join(f"\n  also at {also}" for also in s.also)
            elif s.result == "inconclusive":
                line += f": {s.cause}"
            if s.expected_differences:
                line += f"  [expected: {s.expected_differences}]"
            echo(line)
