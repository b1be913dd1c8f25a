"""`dualbench bench`: paired, interleaved speed benchmarks of torch vs paddle, resumable, into OUT/bench.csv.

How a run is organised:
- A *cell* is (task, backend, mode, precision, threads, batch size, repeat) and yields one row per loop
  (engine, and bare with --bare), or a time-to-target row (loop "ttt"). Each row has a deterministic
  cell_key; rows are appended atomically right after their cell, and a rerun skips keys already there.
- Per repeat, one worker process per backend is started with the same pinned thread environment and
  only its framework imported; the parent alternates cells between them (A B, then B A for the next
  cell), so machine noise hits both backends alike and order effects cancel.
- A cell that fails (exception, out of memory, crashed worker) or diverges (NaN/Inf loss or weights) is
  recorded too, as rows with status `failed` / `diverged` and the error's last line, and holds no timing;
  the other cells go on. A rerun retries failed cells (ok and diverged ones count as finished); the exit
  code is 1 when a cell failed.
- A/A pairs (stage "aa", equal stage only): after the torch/paddle pair of the smallest and the largest
  task, each framework against itself, sides a and b in two worker processes of their own, interleaved
  like a pair. Their spread is the machine's noise floor; they are in no torch/paddle ratio, and the
  second stage adds no pairs to a configuration at that noise whose missing pairs do not fit in time.
- Statistics (common.stats): per-task ratio torch/paddle over the interleaved pairs, with a 95% CI and
  a verdict faster / same (+-5%) / slower / inconclusive. The tables are dualbench.report's.
"""
import os
import sys
import time
from pathlib import Path

from dualbench.bench.planning import (aa_spread, choose_best, config_id, first_stage_pairs, pending_cells, plan,
                                      second_stage_decisions, second_stage_totals)
from dualbench.bench import pool
from dualbench.bench.suites import ModelPair, parse_int_list, suite_from_args, suite_tasks
from dualbench.timings.table import ADDED, MACHINE_NOISE, read_bench, recorded_keys, recorded_keys_of
from dualbench.common.errors import UserError


def execute(groups, csv_path, progress, durations, deadline=None, desc="bench", executor=None):
    """The groups on this machine (bench.pool), or as Ray tasks holding whole nodes (bench.on_ray)."""
    from dualbench.executor import is_ray
    if is_ray(executor):
        from dualbench.bench.on_ray import execute_on_ray
        return execute_on_ray(groups, csv_path, progress, durations, deadline, desc)
    return pool.execute(groups, csv_path, progress, durations, deadline, desc)


def second_stage(first, suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, csv_path,
                 durations, deadline, progress, chosen=None, executor=None):
    """More pairs for the configurations whose ratio CI is wider than +-ci_target after the first stage
    (`first`, its plan: equal and best stages), one repeat at a time for all of them (so the ones needing
    few pairs finish first), until each has its planned pairs or the time budget ends. A configuration whose
    spread is about the machine's A/A spread and whose pairs for the target do not fit in the time left, or
    whose planned pairs do not fit, gets none (planning.second_stage_decisions); OUT/second_stage.csv records
    each decision for the report. Returns the problems of its cells."""
    bench_rows = read_bench(csv_path)   # read once: nothing is written to it until the second stage's cells run
    pairs = first_stage_pairs(bench_rows, first)
    extra = second_stage_totals(pairs, suite)
    if not extra:
        return []
    target = f"±{suite.ci_target:.0%}"
    floor = aa_spread(bench_rows, first)
    pair_seconds = {config: sum(pool.cell_seconds(durations, {"task": config[0], "backend": name, "kind": config[1]})
                                for name in ("torch", "paddle")) for config in extra}
    decisions = second_stage_decisions(extra, pairs, floor, pair_seconds, deadline - time.perf_counter(),
                                       suite.ci_target)
    record_decisions(csv_path, first, suite, run_id, extra, floor, decisions)
    skipped = {config: d for config, d in decisions.items() if d["decision"] != ADDED}
    for config, d in skipped.items():
        wants = (f"needs {d['needed']} pairs at the machine's noise (A/A spread {100 * floor[0]:.1f}%)"
                 if d["decision"] == MACHINE_NOISE else f"{extra[config]} pairs planned")
        print(f"dualbench bench: second stage: no more pairs for {config[0]} {config[1]} b{config[2]} {config[3]}: "
              f"{wants}; {d['fit']} fit in the time left", file=sys.stderr)
    extra = {config: total for config, total in extra.items() if config not in skipped}
    if not extra:
        return []
    wanted = ", ".join(f"{config[0]} {config[1]} b{config[2]} {config[3]} {total}" for config, total in extra.items())
    print(f"dualbench bench: second stage, {len(extra)} configuration(s) wider than {target}; "
          f"pairs planned: {wanted}", file=sys.stderr)
    done = recorded_keys_of(bench_rows)[0]
    groups = []
    for stage in dict.fromkeys(g["stage"] for g in first):
        groups += plan(suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, extra, stage=stage,
                       chosen=chosen)
    groups = pending_cells(sorted(groups, key=lambda g: g["repeat"]), done)
    problems, left = execute(groups, csv_path, progress, durations, deadline, desc="bench, second stage",
                             executor=executor)
    if left:
        short = sorted({c["task"] for g in left for c in g["cells"]})
        print(f"dualbench bench: time budget of {suite.budget_seconds:.0f} s reached before repeat {left[0]['repeat']}; "
              f"fewer pairs than planned for: {', '.join(short)} (rerun the command to add them)", file=sys.stderr)
    return problems


def record_decisions(csv_path, first, suite, run_id, extra, floor, decisions):
    """Append the second stage's decision per configuration (second_stage_decisions: the numbers it was made
    from) to OUT/second_stage.csv (timings.table)."""
    from dualbench.common.results import append_rows, now
    from dualbench.timings.settings import pairing_label
    from dualbench.timings.table import SECOND_STAGE_COLUMNS, pair_label
    cells = {config_id(c): c for g in first for c in g["cells"] if c["stage"] != "aa"}
    rows = []
    for config, total in extra.items():
        cell, decision = cells[config], decisions[config]
        rows.append({"suite": suite.name, "task": config[0], "kind": config[1], "batch_size": config[2],
                     "stage": config[3], "model_spec": pair_label(cell.get("pair")),
                     "pairing": pairing_label(cell["stage"], cell["threads"], cell["mode"], cell["precision"],
                                              cell["knobs"]),
                     "pairs": decision["pairs"], "spread_pct": 100 * decision["spread"],
                     "aa_spread_pct": 100 * floor[0], "pairs_needed": decision["needed"], "pairs_planned": total,
                     "pairs_fit": decision["fit"], "decision": decision["decision"],
                     "target_pct": 100 * suite.ci_target, "run_id": run_id, "timestamp": now()})
    append_rows(Path(csv_path).parent / "second_stage.csv", rows, SECOND_STAGE_COLUMNS)


def bench(suite, tasks, backend_names, out_dir, threads_list, seed=0, samples=10000, dataset=None, progress=True,
          executor=None):
    """Plan, skip finished cells, run the rest (equal settings; with tuning, the tuning candidates and
    each framework at its best; then the second stage within the time budget), print the ratio summary.
    Returns the bench.csv path. Holds the lock on OUT throughout."""
    from dualbench.common.fsutil import folder_lock
    with folder_lock(out_dir, "bench"):
        return _bench(suite, tasks, backend_names, out_dir, threads_list, seed, samples, dataset, progress, executor)


def run_stage(groups, csv_path, progress, durations, label, executor=None, deadline=None):
    """Run a stage's pending cells (a rerun skips finished ones and retries failed ones). deadline: start no
    group expected to end past it (the suite's time budget; the tuning and best stages), and say which
    repeats were left for a rerun."""
    done, retried = recorded_keys(csv_path)
    todo = pending_cells(groups, done)
    n_all, n_todo = sum(len(g["cells"]) for g in groups), sum(len(g["cells"]) for g in todo)
    n_retry = sum(1 for g in todo for c in g["cells"] if any(c["keys"][loop] in retried for loop in c["loops"]))
    if n_todo < n_all or n_retry:
        print(f"dualbench bench: {label}: resuming, {n_all - n_todo} of {n_all} cells already in {csv_path}"
              + (f"; retrying {n_retry} failed cell(s)" if n_retry else ""), file=sys.stderr)
    problems, left = execute(todo, csv_path, progress, durations, deadline, desc=f"bench, {label}", executor=executor)
    if left:
        repeats = ", ".join(str(r) for r in dict.fromkeys(g["repeat"] for g in left))
        print(f"dualbench bench: {label}: time budget reached; repeat(s) {repeats} not started (rerun the command "
              "to add them)", file=sys.stderr)
    return problems


def print_choices(chosen, backend_names):
    from dualbench.timings.settings import setting_label
    for task, winners in chosen.items():
        text = "; ".join(f"{name} {setting_label(**winners[name])}" for name in backend_names if name in winners)
        print(f"dualbench bench: tuned {task}: {text}", file=sys.stderr)


def _bench(suite, tasks, backend_names, out_dir, threads_list, seed, samples, dataset, progress, executor=None):
    from dualbench import backends
    from dualbench.engine import new_run_id
    for name in backend_names:
        backends.require(name)
    csv_path = Path(out_dir) / "bench.csv"
    run_id = new_run_id()
    started = time.perf_counter()
    durations = {}
    equal = plan(suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, final=not suite.tune)
    problems = run_stage(equal, csv_path, progress, durations, "equal settings", executor)
    first, chosen = list(equal), None
    if suite.tune:
        tune = plan(suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, stage="tune")
        problems += run_stage(tune, csv_path, progress, durations, "tuning", executor, started + suite.budget_seconds)
        chosen = choose_best(csv_path, tune)
        print_choices(chosen, backend_names)
        missing = [t.name for t in tasks if not all(n in chosen.get(t.name, {}) for n in backend_names)]
        if missing:
            print(f"dualbench bench: no best stage for {', '.join(missing)}: every tuning candidate of a backend "
                  "failed", file=sys.stderr)
        best = plan(suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset, stage="best",
                    chosen=chosen)
        problems += run_stage(best, csv_path, progress, durations, "each at its best", executor,
                              started + suite.budget_seconds)
        first += best
    if suite.ci_target > 0 and set(backend_names) == {"torch", "paddle"}:
        problems += second_stage(first, suite, tasks, backend_names, threads_list, run_id, seed, samples, dataset,
                                 csv_path, durations, started + suite.budget_seconds, progress, chosen, executor)
    elapsed = time.perf_counter() - started
    if csv_path.exists():
        from dualbench.report import print_speed_summary
        print_speed_summary(csv_path)
    print(f"{sum(len(v) for v in durations.values()) + len(problems)} cells in {elapsed:.0f} s; rows in {csv_path}")
    n_failed = sum(1 for _, status, _ in problems if status == "failed")
    n_diverged = len(problems) - n_failed
    if n_diverged:
        print(f"dualbench bench: {n_diverged} cell(s) diverged (status 'diverged' in {csv_path}; excluded from "
              "the ratios)", file=sys.stderr)
    if n_failed:
        print(f"dualbench bench: {n_failed} cell(s) failed (status 'failed' in {csv_path}); rerun the same "
              "command to retry them", file=sys.stderr)
        raise SystemExit(1)
    return csv_path


def model_pair_from_args(args):
    """The --torch/--paddle model pair as a bench workload (SPEC syntax checked here, imports in the workers)."""
    from dualbench.model_loader import parse_shape, parse_spec
    if not (args.torch and args.paddle):
        raise UserError("a model pair needs both --torch SPEC and --paddle SPEC")
    specs = {side: parse_spec(getattr(args, side), f"--{side}") for side in ("torch", "paddle")}
    if not args.input:
        raise UserError("a model pair needs --input, the shape of one sample, e.g. --input 3,224,224")
    shape = parse_shape(args.input, "--input")
    batch = parse_int_list(args.batch_size, "--batch-size")[0] if args.batch_size else 8
    labels = {s.label for s in specs.values()}
    name = labels.pop() if len(labels) == 1 else f"{specs['torch'].label}/{specs['paddle'].label}"
    classes = args.classes or 10
    if classes < 1:
        raise UserError(f"--classes must be at least 1, got {classes}")
    if args.lr is not None and args.lr <= 0:
        raise UserError(f"--lr must be positive, got {args.lr}")
    return ModelPair(name, args.torch, args.paddle, shape, classes, batch, args.optimizer or "sgd",
                     args.lr or 0.01)


def cmd_bench(args):
    from dualbench import backends
    from dualbench.executor import from_args, session
    executor = from_args(args)   # first: asking for Ray without it installed is a one-line error
    names = backends.parse_backends(args.backends)
    threads = parse_int_list(args.threads, "--threads") if args.threads else [os.cpu_count() or 1]
    if args.torch or args.paddle:
        if args.tasks or args.dataset:
            raise UserError("--torch/--paddle benchmark a model pair; leave out --tasks and --dataset")
        pair = model_pair_from_args(args)
        suite = suite_from_args(args, default="pairs")
        with session(executor):
            bench(suite, [pair], ["torch", "paddle"], args.out, threads, seed=args.seed, progress=not args.no_progress,
                  executor=executor)
        return
    suite = suite_from_args(args)
    if args.dataset:
        from dualbench.common.data.catalog import get_info
        get_info(args.dataset)
    tasks = suite_tasks(suite, args.tasks)
    if args.dataset:
        from dualbench.common.data.catalog import get_info
        shape = tuple(get_info(args.dataset).shape)
        skipped = [t.name for t in tasks if tuple(t.model.input_shape) != shape]
        if skipped:
            print(f"dualbench bench: skipping tasks whose input is not {shape}: {', '.join(skipped)}", file=sys.stderr)
        tasks = [t for t in tasks if tuple(t.model.input_shape) == shape]
        if not tasks:
            raise UserError(f"no task takes {shape} inputs from dataset '{args.dataset}'")
    with session(executor):
        bench(suite, tasks, names, args.out, threads, seed=args.seed, samples=args.samples, dataset=args.dataset,
              progress=not args.no_progress, executor=executor)


def register(subparsers):
    p = subparsers.add_parser(
        "bench", help="paired torch/paddle speed benchmark (interleaved repeats, CIs), rows into OUT/bench.csv",
        description="Time each backend in its own worker process, interleaved repeat by repeat: first at equal "
                    "settings, then (with tuning) each framework tuned on its own and at its best. Built-in "
                    "tasks, or your own model pair with --torch SPEC --paddle SPEC --input C,H,W. Reruns into "
                    "the same --out resume, skipping finished cells.")
    p.add_argument("--suite", default="default",
                   help="default (8 CPU tasks: equal settings, tuning, each at its best, training and inference), "
                        "ttt (LeNet time to target on Fashion-MNIST and MNIST 5k, each at its best), gpu (larger "
                        "batches, AMP, compile), or a task-name prefix such as cifar2 (default: default)")
    p.add_argument("--torch", help="a model pair's torch side: module:callable[:{json kwargs}] or file.py:callable")
    p.add_argument("--paddle", help="a model pair's paddle side, same syntax")
    p.add_argument("--input", help="model pair: the shape of one input sample, e.g. 3,224,224")
    p.add_argument("--classes", type=int, help="model pair: random labels among this many classes (default 10)")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], help="model pair: the optimizer (default sgd)")
    p.add_argument("--lr", type=float, help="model pair: learning rate (default 0.01)")
    p.add_argument("--mode", choices=["train", "infer", "both"],
                   help="train steps, inference latency, or both (default: both for the default suite and model "
                        "pairs, train otherwise)")
    p.add_argument("--tune", action="store_true", help="tune each framework on its own (threads, oneDNN; GPU: cuDNN "
                                                        "autotune, TF32) and time each at its best (on in the default, "
                                                        "ttt and pair suites)")
    p.add_argument("--no-tune", action="store_true", help="equal settings only")
    p.add_argument("--tune-compile", action="store_true", help="also try compiled mode while tuning (costly on CPU: "
                                                                "torch.compile's first step takes 11-34 s here)")
    p.add_argument("--tasks", "--task", dest="tasks", help="comma-separated task names (unknown names are skipped)")
    p.add_argument("--backends", "--backend", dest="backends", default="torch,paddle")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], help="default: the suite's (cpu; gpu for --suite gpu)")
    p.add_argument("--batch-size", help="batch size(s), comma list for a sweep (default: each task's)")
    p.add_argument("--steps", help="timed steps per window, or auto (default: enough for the suite's window time)")
    p.add_argument("--windows", type=int, help="timed windows per cell (default 6; >= 6 gives a per-cell 95%% CI)")
    p.add_argument("--warmup", type=int, help="warm-up steps excluded from timing (default 3, and at least 0.25 s)")
    p.add_argument("--warmup-seconds", type=float, help="minimum warm-up time per cell (default 0.25; lets the other "
                                                         "worker's idle threads stop spinning)")
    p.add_argument("--window-seconds", type=float, help="target time of one window with --steps auto (default 0.06)")
    p.add_argument("--repeats", type=int, help="interleaved repeats per backend and stage, i.e. pairs for the ratio CI "
                                                  "(default: the suite's; 5 in the default suite, 3 for its inference)")
    p.add_argument("--ci-target", type=float, help="second stage: more pairs for configurations whose ratio CI "
                                                    "is wider than +-this percentage (default 3; 0 turns it off)")
    p.add_argument("--max-repeats", type=int, help="second stage: at most this many pairs per configuration (default 40)")
    p.add_argument("--budget-minutes", type=float, help="second stage: start no repeat expected to end past this "
                                                         "wall time of the invocation; the tuning and best stages start no repeat past "
                                                         "it either (default 9.5, default suite 580 s; gpu suite 30)")
    p.add_argument("--threads", help=f"math threads per worker, comma list for a sweep (default {os.cpu_count()})")
    p.add_argument("--compile", action="store_true", help="also time compiled mode (torch.compile / paddle.jit.to_static)")
    p.add_argument("--amp", action="store_true", help="also time AMP (float16 + GradScaler; GPU only)")
    p.add_argument("--bare", action="store_true", help="also time a bare loop over pre-loaded tensors (on in the "
                                                        "default suite) for the harness overhead")
    p.add_argument("--no-bare", action="store_true", help="skip the bare loop")
    p.add_argument("--no-ttt", action="store_true", help="skip time-to-target cells")
    p.add_argument("--no-aa", action="store_true", help="skip the A/A pairs (each framework against itself in two "
                                                         "worker processes: the machine's noise floor)")
    p.add_argument("--ttt", action="store_true", help="add time-to-target cells (tasks with a target accuracy)")
    p.add_argument("--dataset", help="draw batches from this dataset instead of random arrays of the task's shape")
    p.add_argument("--samples", type=int, default=10000, help="random samples to draw batches from (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs/)")
    p.add_argument("--no-progress", action="store_true")
    from dualbench.executor import add_arguments as add_executor_arguments
    add_executor_arguments(p, ship_data=False)   # on Ray each repeat group holds one whole node
    p.set_defaults(func=cmd_bench)
