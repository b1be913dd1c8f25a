"""Planning a bench run: cells, their keys, the interleaved groups, and the second stage's extra pairs."""

import numpy as np

from dualbench.bench.suites import epoch_samples, random_samples, ttt_dataset
from dualbench.common.bench_table import BENCH_COLUMNS

def cell_key(cell, loop):
    """Everything that identifies a row: a changed setting makes a new key, never a silent mix."""
    base = (f"{cell['suite']}|{cell['task']}|{cell['backend']}|{cell['device']}|{cell['mode']}|{cell['precision']}"
            f"|t{cell['threads']}|b{cell['batch_size']}|{loop}|r{cell['repeat']}|seed{cell['seed']}")
    if loop == "ttt":
        return base + f"|{cell['dataset']}|e{cell['max_epochs']}"
    return (base + f"|w{cell['warmup']}/{cell['warmup_seconds']}s|s{cell['steps']}/{cell['window_seconds']}s"
                   f"|k{cell['windows']}|{cell['dataset'] or 'random'}|n{cell['samples']}")


def config_id(cell):
    """The configuration a ratio is computed for: every cell setting except the backend and the repeat."""
    return (cell["task"], cell["batch_size"], cell["mode"], cell["precision"], cell["threads"])


def plan(suite, tasks, backend_names, threads_list, run_id, seed=0, samples=10000, dataset=None, extra=None):
    """Groups of cells in execution order: one group per (threads, repeat), cells alternating backends.

    extra: {config_id: total pairs} for the second stage: repeats suite.repeats+1 .. up to each
    configuration's total, speed cells of those configurations only, engine loop only, no time to target.
    """
    groups = []
    repeats = range(1, suite.repeats + 1)
    if extra is not None:
        repeats = range(suite.repeats + 1, max(extra.values(), default=suite.repeats) + 1)
    for threads in threads_list:
        for repeat in repeats:
            cells, flip = [], repeat % 2 == 0
            for task in tasks:
                configs = [(bs or task.protocol.batch_size, mode, prec) for bs in suite.batch_sizes
                           for mode in suite.modes for prec in suite.precisions]
                kinds = [("speed", cfg) for cfg in dict.fromkeys(configs)]
                ttt_data = ttt_dataset(task) if suite.ttt and task.target_accuracy else None
                if ttt_data and extra is None:
                    kinds.append(("ttt", (task.protocol.batch_size, "eager", "fp32")))
                for kind, (batch_size, mode, precision) in kinds:
                    if extra is not None and extra.get((task.name, batch_size, mode, precision, threads), 0) < repeat:
                        continue
                    order = list(reversed(backend_names)) if flip else list(backend_names)
                    flip = not flip
                    for name in order:
                        cell = {"kind": kind, "suite": suite.name, "task": task.name, "backend": name,
                                "device": suite.device, "mode": mode, "precision": precision, "threads": threads,
                                "batch_size": batch_size, "repeat": repeat, "seed": seed, "run_id": run_id}
                        if kind == "speed":
                            loops = ["engine", "bare"] if suite.bare and extra is None else ["engine"]
                            cell.update(warmup=suite.warmup, warmup_seconds=suite.warmup_seconds,
                                        steps=suite.steps, windows=suite.windows,
                                        window_seconds=suite.window_seconds, dataset=dataset,
                                        samples=random_samples(task, batch_size, samples),
                                        epoch_samples=epoch_samples(task), loops=loops)
                        else:
                            cell.update(dataset=ttt_data, max_epochs=task.protocol.epochs, loops=["ttt"])
                        cell["keys"] = {loop: cell_key(cell, loop) for loop in cell["loops"]}
                        cells.append(cell)
            if cells:
                groups.append({"threads": threads, "repeat": repeat, "cells": cells})
    return groups


def second_stage_pairs(csv_path, first_stage, suite):
    """{config_id: total pairs} for the configurations of the first-stage plan whose ratio CI misses
    +-suite.ci_target: the pairs the first stage's spread asks for (common.stats.pairs_needed).

    Only the first stage's own engine rows count (their cell keys), so a resumed run plans the same."""
    import pandas as pd

    from dualbench.common.bench_table import measured
    from dualbench.common.results import read_csv
    from dualbench.common.stats import pairs_needed, paired_ratio_ci, ratio_halfwidth
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return {}
    where = {c["keys"]["engine"]: (config_id(c), c["backend"], c["repeat"])
             for g in first_stage for c in g["cells"] if "engine" in c["keys"]}
    frame = read_csv(csv_path, BENCH_COLUMNS)
    frame = measured(frame[frame["cell_key"].astype(str).isin(where)])   # ok rows, one per cell: as the report counts
    values = pd.DataFrame([(*where[k], v) for k, v in zip(frame["cell_key"], frame["samples_per_s"])],
                          columns=["config", "backend", "repeat", "sps"])
    out = {}
    for config, rows in values.groupby("config", sort=False):
        table = rows.pivot(index="repeat", columns="backend", values="sps").dropna()
        if not {"torch", "paddle"} <= set(table.columns) or len(table) < 2:
            continue
        t, p = table["torch"].to_numpy(float), table["paddle"].to_numpy(float)
        ci = paired_ratio_ci(t, p)
        if ratio_halfwidth(ci["ratio"], ci["lo"], ci["hi"]) <= suite.ci_target:
            continue
        total = pairs_needed(np.log(t) - np.log(p), suite.ci_target, suite.max_repeats)
        if total and total > suite.repeats:
            out[config] = total
    return out


def pending_cells(groups, done):
    """Drop finished loops from every cell (and cells with none left); a crash mid-cell reruns it."""
    out = []
    for group in groups:
        cells = []
        for cell in group["cells"]:
            loops = [loop for loop in cell["loops"] if cell["keys"][loop] not in done]
            if loops:
                cells.append({**cell, "loops": loops})
        if cells:
            out.append({**group, "cells": cells})
    return out


