"""Planning a bench run: cells, their keys, the interleaved groups, and the second stage's extra pairs."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dualbench.bench.suites import ModelPair, epoch_samples, random_samples, ttt_dataset
from dualbench.timings.settings import candidates, knobs_text, parse_knobs
from dualbench.timings.table import ADDED, BENCH_COLUMNS, MACHINE_NOISE, NEEDED_CAP, NO_FIT

def cell_key(cell, loop):
    """Everything that identifies a row: a changed setting makes a new key, never a silent mix. (Equal-stage
    cells without knobs keep the keys they had before stages and knobs existed, so old files resume.)"""
    base = (f"{cell['suite']}|{cell['task']}|{cell['backend']}|{cell['device']}|{cell['mode']}|{cell['precision']}"
            f"|t{cell['threads']}|b{cell['batch_size']}|{loop}|r{cell['repeat']}|seed{cell['seed']}")
    if cell.get("stage", "equal") != "equal":
        base += f"|{cell['stage']}"
    if cell.get("aa_side"):
        base += f"|side-{cell['aa_side']}"
    if cell.get("knobs"):
        base += f"|k{cell['knobs']}"
    if cell.get("pair"):
        base += "|pair" + hashlib.sha1(json.dumps(cell["pair"], sort_keys=True).encode()).hexdigest()[:12]
    if loop == "ttt":
        return base + f"|{cell['dataset']}|e{cell['max_epochs']}" + (f"|target{cell['target']}" if "target" in cell else "")
    return (base + f"|w{cell['warmup']}/{cell['warmup_seconds']}s|s{cell['steps']}/{cell['window_seconds']}s"
                   f"|k{cell['windows']}|{cell['dataset'] or 'random'}|n{cell['samples']}")


def shared_setting(cell):
    """The setting both members of a pair share: the whole setting in the equal and tune stages, 'best'
    in the best stage (where each backend runs its own winner)."""
    if cell.get("stage") == "best":
        return "best"
    return f"{cell['mode']}|{cell['precision']}|t{cell['threads']}|{cell.get('knobs') or ''}"


def config_id(cell):
    """The configuration a ratio is computed for: every cell setting except the backend and the repeat."""
    return (cell["task"], cell.get("kind", "speed"), cell["batch_size"], cell.get("stage", "equal"), shared_setting(cell))


def batch_of(task):
    return task.batch_size if isinstance(task, ModelPair) else task.protocol.batch_size


def infer_batches(suite, task):
    return list(dict.fromkeys(bs or batch_of(task) for bs in suite.infer_batch_sizes))


def configs(suite, tasks, backend_names, threads_list, stage="equal", chosen=None, final=True):
    """The configurations of a stage, in order: dicts with task, kind, batch_size, per-backend settings
    {backend: {threads, mode, precision, knobs}} and the group they run in.

    equal: every (threads, mode, precision) of the suite, the same for both backends, framework-default
    knobs; tune: every candidate of each backend on its own (timings.settings.candidates), one
    workload per task (training, else inference at the largest batch); best: each backend at its
    `chosen` setting {(task, kind, batch_size): {backend: setting}}. Inference cells join the final stage.
    """
    out = []
    train = "train" in suite.workloads
    for task in tasks:
        batches = [bs or batch_of(task) for bs in suite.batch_sizes]
        kinds = [("speed", bs) for bs in dict.fromkeys(batches)] if train else []
        if "infer" in suite.workloads and (final or stage == "tune"):
            kinds += [("infer", bs) for bs in infer_batches(suite, task)]
        if stage == "tune":
            kind, bs = kinds[0] if train else ("infer", max(infer_batches(suite, task)))
            for name in backend_names:
                for setting in candidates(suite.device, name, suite.tune_cores, suite.tune_modes, suite.precisions):
                    out.append({"task": task, "kind": kind, "batch_size": bs, "settings": {name: setting},
                                "group": 1})
            continue
        if stage == "best":   # one tuned winner per task and backend, for all of its configurations
            winners = (chosen or {}).get(task.name, {})
            if not all(name in winners for name in backend_names):
                continue
            settings = {name: winners[name] for name in backend_names}
            out += [{"task": task, "kind": kind, "batch_size": bs, "group": "best", "settings": settings}
                    for kind, bs in kinds]
            if final:   # whole epochs through the engine: eager float32 at the winner's threads and knobs
                out += ttt_configs(suite, task, {name: {**s, "mode": "eager", "precision": "fp32"}
                                                 for name, s in settings.items()}, "best")
            continue
        for threads in threads_list:
            shared = [({"threads": threads, "mode": m, "precision": p, "knobs": {}}, kind, bs)
                      for kind, bs in kinds for m in (suite.modes if kind == "speed" else suite.modes[:1])
                      for p in (suite.precisions if kind == "speed" else ("fp32",))]
            for setting, kind, bs in shared:
                out.append({"task": task, "kind": kind, "batch_size": bs, "group": threads,
                            "settings": {name: setting for name in backend_names}})
            if final:
                ttt_setting = {"threads": threads, "mode": "eager", "precision": "fp32", "knobs": {}}
                out += ttt_configs(suite, task, {name: ttt_setting for name in backend_names}, threads)
    return out


def ttt_configs(suite, task, settings, group):
    """Time-to-target configurations of a task: the suite's (dataset, target) list, else the task's own
    dataset (or a synthetic one of its shape) at the task's target."""
    if not suite.ttt or isinstance(task, ModelPair):
        return []
    targets = suite.ttt_targets
    if not targets and task.target_accuracy:
        targets = ((ttt_dataset(task), task.target_accuracy),)
    return [{"task": task, "kind": "ttt", "batch_size": batch_of(task), "group": group, "settings": settings,
             "dataset": dataset, "target": float(target)} for dataset, target in targets if dataset]


def make_cell(suite, config, name, repeat, run_id, seed, samples, dataset, stage, extra, aa_side=None):
    """One cell of a configuration for one backend and repeat, with its row keys. aa_side "a" / "b": one side of
    an A/A pair (stage "aa", its own worker process, the configuration's primary loop only)."""
    task, kind, batch_size, setting = config["task"], config["kind"], config["batch_size"], config["settings"][name]
    cell = {"kind": kind, "suite": suite.name, "task": task.name, "backend": name, "device": suite.device,
            "mode": setting["mode"], "precision": setting["precision"], "threads": setting["threads"],
            "knobs": knobs_text(setting["knobs"]), "stage": "aa" if aa_side else stage, "batch_size": batch_size,
            "repeat": repeat, "seed": seed, "run_id": run_id}
    if aa_side:
        cell["aa_side"] = aa_side
    pair = isinstance(task, ModelPair)
    if pair:
        cell["pair"] = task.cell_fields()
    if kind == "ttt":
        cell.update(dataset=config["dataset"], target=config["target"], max_epochs=suite.ttt_max_epochs or task.protocol.epochs,
                    loops=["ttt"])
    else:
        windows = suite.tune_windows if stage == "tune" else suite.windows
        if kind == "infer":
            loops = ["infer"]
        elif pair:
            loops = ["bare"]
        else:
            loops = ["engine", "bare"] if suite.bare and extra is None and stage != "tune" else ["engine"]
        cell.update(warmup=suite.warmup, warmup_seconds=suite.warmup_seconds, steps=suite.steps, windows=windows,
                    window_seconds=suite.window_seconds, dataset=None if pair else dataset,
                    samples=0 if pair else random_samples(task, batch_size, samples),
                    epoch_samples=None if pair else epoch_samples(task), loops=loops[:1] if aa_side else loops)
    cell["keys"] = {loop: cell_key(cell, loop) for loop in cell["loops"]}
    return cell


def aa_tasks(tasks):
    """The tasks that get A/A pairs: the smallest and the largest built-in task by forward multiply-adds per
    training step (common.tasks.forward_macs x batch size: in the default suite mnist-linear-mse, 78 thousand,
    and mnist-conv-ce, 236 million), and every model pair."""
    from dualbench.common.tasks import forward_macs
    built_in = sorted((t for t in tasks if not isinstance(t, ModelPair)),
                      key=lambda t: forward_macs(t.model) * batch_of(t))
    ends = [built_in[0].name, built_in[-1].name] if built_in else []
    return list(dict.fromkeys(ends + [t.name for t in tasks if isinstance(t, ModelPair)]))


def aa_members(suite, members, tasks, stage, extra):
    """Indexes of a group's configurations followed by A/A pairs: the first training configuration of each
    A/A task, in the equal stage only (never in the tune or best stage, nor in the second stage's extra pairs)."""
    if not suite.aa or stage != "equal" or extra is not None:
        return set()
    wanted, first = set(aa_tasks(tasks)), {}
    for index, config in enumerate(members):
        if config["kind"] == "speed" and config["task"].name in wanted:
            first.setdefault(config["task"].name, index)
    return set(first.values())


def plan(suite, tasks, backend_names, threads_list, run_id, seed=0, samples=10000, dataset=None, extra=None,
         stage="equal", chosen=None, final=True):
    """Groups of cells in execution order: per group and repeat, the configurations' cells alternate
    backends (A B, then B A for the next configuration), so machine noise hits both alike. In the equal
    stage the smallest and largest task's torch/paddle pair is followed by one A/A pair per backend (sides
    a and b, two worker processes of that backend; a first, then b first for the next pair and repeat).

    extra: {config_id: total pairs} for the second stage: repeats suite.repeats+1 .. up to each
    configuration's total, training cells of those configurations only, engine loop only (bare for a model pair).
    Tuning runs one repeat of every candidate in one group. final: the stage that gets inference cells.
    """
    groups = []
    repeats = range(1, (1 if stage == "tune" else suite.repeats) + 1)
    if extra is not None:
        repeats = range(suite.repeats + 1, max(extra.values(), default=suite.repeats) + 1)
    stage_configs = configs(suite, tasks, backend_names, threads_list, stage, chosen, final)
    for group in dict.fromkeys(c["group"] for c in stage_configs):
        members = [c for c in stage_configs if c["group"] == group]
        aa = aa_members(suite, members, tasks, stage, extra)
        for repeat in repeats:
            cells, flip, aa_flip = [], repeat % 2 == 0, repeat % 2 == 0
            for index, config in enumerate(members):
                if extra is not None and config["kind"] != "speed":   # the second stage adds training pairs only
                    continue
                if config["kind"] == "infer" and extra is None and repeat > (suite.infer_repeats or suite.repeats):
                    continue
                names = [n for n in backend_names if n in config["settings"]]
                order = list(reversed(names)) if flip else names
                pair = [make_cell(suite, config, name, repeat, run_id, seed, samples, dataset, stage, extra)
                        for name in order]
                if extra is not None and extra.get(config_id(pair[0]), 0) < repeat:
                    continue
                flip = not flip
                cells += pair
                for name in (names if index in aa else []):
                    cells += [make_cell(suite, config, name, repeat, run_id, seed, samples, dataset, stage, extra,
                                        aa_side=side) for side in (("b", "a") if aa_flip else ("a", "b"))]
                    aa_flip = not aa_flip
            if cells:
                groups.append({"group": group, "repeat": repeat, "stage": stage, "cells": cells})
    return groups


def choose_best(csv_path, tune_groups):
    """{task: {backend: setting}}: each backend's fastest tuning candidate (highest median samples/s of
    its tuning cell), from the rows of the tuning plan's own cells (their keys), so a resumed run chooses
    the same. Tuning rows are never reused for the verdict (no winner's curse): the best stage runs new
    repeats. A backend whose candidates all failed has no winner, and its task no best stage."""
    from dualbench.timings.table import measured
    from dualbench.common.results import read_csv
    where = {}
    for group in tune_groups:
        for cell in group["cells"]:
            loop = cell["loops"][0]
            where[cell["keys"][loop]] = cell
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        return {}
    frame = read_csv(csv_path, BENCH_COLUMNS)
    frame = measured(frame[frame["cell_key"].astype(str).isin(where)])
    best = {}
    for key, sps in zip(frame["cell_key"].astype(str), frame["samples_per_s"].astype(float)):
        cell = where[key]
        config = cell["task"]
        current = best.setdefault(config, {}).get(cell["backend"])
        if current is None or sps > current[0]:
            best[config][cell["backend"]] = (sps, {"threads": cell["threads"], "mode": cell["mode"],
                                                   "precision": cell["precision"],
                                                   "knobs": parse_knobs(cell["knobs"])})
    return {config: {name: setting for name, (_, setting) in by.items()} for config, by in best.items()}


def bench_rows(bench):
    """bench.csv's rows: read from its path (None when absent or empty), or `bench` itself when the caller
    has read them already, so that one decision reads the file once."""
    from dualbench.timings.table import read_bench
    return read_bench(Path(bench)) if isinstance(bench, (str, os.PathLike)) else bench


def paired_by_repeat(bench, cells, sides):
    """{configuration: (samples/s of sides[0], samples/s of sides[1])}, arrays in repeat order over the repeats
    both sides measured. cells: {cell_key: (configuration, side, repeat)}; only these cells' rows count (ok rows,
    one per cell: as the report counts), by their keys, so a resumed run decides the same."""
    import pandas as pd

    from dualbench.timings.table import measured
    frame = bench_rows(bench)
    if frame is None or not cells:
        return {}
    frame = measured(frame[frame["cell_key"].astype(str).isin(cells)])
    values = pd.DataFrame([(*cells[k], v) for k, v in zip(frame["cell_key"], frame["samples_per_s"])],
                          columns=["config", "side", "repeat", "sps"])
    out = {}
    for config, rows in values.groupby("config", sort=False):
        table = rows.pivot(index="repeat", columns="side", values="sps").dropna()
        if set(sides) <= set(table.columns):
            out[config] = tuple(table[side].to_numpy(float) for side in sides)
    return out


def first_stage_pairs(bench, first_stage):
    """{config_id: (torch samples/s, paddle samples/s)} per complete pair (arrays in repeat order) of the
    first-stage plan's training configurations with at least 2 pairs, A/A cells left out. Only the plan's own
    rows of each cell's primary loop count (engine; bare for a model pair). bench: bench.csv's path or rows."""
    cells = {c["keys"][c["loops"][0]]: (config_id(c), c["backend"], c["repeat"])
             for g in first_stage for c in g["cells"] if c["kind"] == "speed" and c["stage"] != "aa"}
    return {config: (t, p) for config, (t, p) in paired_by_repeat(bench, cells, ("torch", "paddle")).items()
            if len(t) >= 2}


def second_stage_pairs(bench, first_stage, suite):
    """{config_id: total pairs} for the configurations of the first-stage plan whose ratio CI misses
    +-suite.ci_target (second_stage_totals of first_stage_pairs). bench: bench.csv's path or rows."""
    return second_stage_totals(first_stage_pairs(bench, first_stage), suite)


def second_stage_totals(pairs, suite):
    """{config_id: total pairs} for the configurations of `pairs` (first_stage_pairs) whose ratio CI misses
    +-suite.ci_target: the pairs the first stage's spread asks for (common.stats.pairs_needed).
    Training configurations only (inference keeps its first-stage pairs; A/A pairs never get more)."""
    from dualbench.common.stats import pairs_needed, paired_ratio_ci, ratio_halfwidth
    out = {}
    for config, (t, p) in pairs.items():
        ci = paired_ratio_ci(t, p)
        if ratio_halfwidth(ci["ratio"], ci["lo"], ci["hi"]) <= suite.ci_target:
            continue
        total = pairs_needed(np.log(t) - np.log(p), suite.ci_target, suite.max_repeats)
        if total and total > suite.repeats:
            out[config] = total
    return out


def aa_spread(bench, first_stage):
    """(s, df): the machine's per-pair spread in this run, pooled over the first-stage plan's A/A
    configurations (SD of log(side a / side b), each configuration around its own mean); (NaN, 0) without
    A/A rows. bench: bench.csv's path or rows."""
    from dualbench.common.stats import pooled_spread
    cells = {c["keys"][c["loops"][0]]: ((c["task"], c["backend"], c["batch_size"]), c["aa_side"], c["repeat"])
             for g in first_stage for c in g["cells"] if c["stage"] == "aa"}
    return pooled_spread([np.log(a) - np.log(b) for a, b in paired_by_repeat(bench, cells, ("a", "b")).values()])


def second_stage_decisions(extra, pairs, floor, pair_seconds, seconds_left, target):
    """The second stage's budget where it can help: per configuration of `extra`, on its own at
    pair_seconds[config] per pair, {"decision", "pairs", "spread", "needed", "fit"}: the decision and the
    numbers it was made from (its first-stage pairs, their per-pair spread, the pairs a +-target CI needs,
    the pairs that fit in seconds_left). The decision is

    - MACHINE_NOISE: its per-pair spread is about the machine's A/A spread (an F test does not show it
      above; common.stats.spread_above) and the pairs a +-target CI needs do not fit in seconds_left: more
      pairs would only shrink machine noise that the budget cannot shrink enough;
    - NO_FIT: the pairs planned for it (extra, capped by --max-repeats) do not fit: they would take the
      time of configurations whose pairs do;
    - ADDED otherwise.
    floor: (s, df) of aa_spread, (NaN, 0) without A/A pairs; pairs: first_stage_pairs."""
    from dualbench.common.stats import spread_above, spread_and_pairs_needed
    s0, df0 = floor
    out = {}
    for config, total in extra.items():
        torch_sps, paddle_sps = pairs[config]
        n = len(torch_sps)
        spread, needed = spread_and_pairs_needed(torch_sps, paddle_sps, target, NEEDED_CAP)
        fit = int(max(seconds_left, 0) // max(pair_seconds[config], 1e-9))
        at_floor = bool(df0) and not spread_above(spread, n - 1, s0, df0)
        if at_floor and needed - n > fit:
            decision = MACHINE_NOISE
        elif total - n > fit:
            decision = NO_FIT
        else:
            decision = ADDED
        out[config] = {"decision": decision, "pairs": n, "spread": spread, "needed": needed, "fit": fit}
    return out


def second_stage_skips(extra, pairs, floor, pair_seconds, seconds_left, target):
    """{config: (why, pairs needed for +-target, pairs that fit)} for the configurations of `extra` the second
    stage leaves alone (second_stage_decisions other than ADDED)."""
    return {config: (d["decision"], d["needed"], d["fit"])
            for config, d in second_stage_decisions(extra, pairs, floor, pair_seconds, seconds_left, target).items()
            if d["decision"] != ADDED}


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


