"""Running a study: every arm x dataset x seed x backend cell through `dualbench run`'s engine."""
import sys
from pathlib import Path

from dualbench.common.errors import UserError


def resolve_dataset(plan, data_path=None):
    """(dataset actually used, why) — the plan's dataset when present, else its labelled fallback."""
    from dualbench.common.data.catalog import get_info
    from dualbench.common.data.sources import locate, missing_message
    info = get_info(plan.dataset)
    if info.synthetic or locate(plan.dataset, data_path) is not None:
        return plan.dataset, ""
    if plan.fallback:
        return plan.fallback, f"{plan.dataset} is not on this machine ({missing_message(plan.dataset)}); " \
                              f"running on {plan.fallback} instead"
    raise UserError(missing_message(plan.dataset))


def select_plans(study, datasets):
    if not datasets:
        return list(study.data)
    wanted = [d.strip() for d in datasets.split(",") if d.strip()]
    known = {p.dataset for p in study.data}
    unknown = [d for d in wanted if d not in known]
    if unknown:
        raise UserError(f"study '{study.name}' has no dataset {', '.join(unknown)} (it has: {', '.join(sorted(known))})")
    return [p for p in study.data if p.dataset in wanted]


def run_study(study, backend_names, out_root, datasets=None, seeds=None, threads=None, progress=True, executor=None):
    """Run every arm x dataset x seed x backend cell (finished cells are skipped); returns the failed cells.

    All cells of the study go to the executor at once: one after the other on this machine, or spread over
    a Ray cluster (`--executor ray`) without waiting for one arm to finish before the next starts."""
    from dualbench.engine import new_run_id
    from dualbench.run import plan_cells, print_summary, run_cells
    from dualbench.common.tasks import get_task
    out = Path(out_root) / study.name
    plans = select_plans(study, datasets)
    jobs = [(plan, arm) for plan in plans for arm in study.arms]
    run_id, cells = new_run_id(), []
    for i, (plan, arm) in enumerate(jobs, start=1):
        dataset, why = resolve_dataset(plan)
        if why:
            print(f"dualbench study: {why}", file=sys.stderr)
        epochs = arm.epochs or plan.epochs
        print(f"[{study.name} {i}/{len(jobs)}] {arm.label} on {dataset}", file=sys.stderr)
        cells += plan_cells([get_task(arm.task)], backend_names, list(seeds or plan.seeds), out, run_id,
                            epochs=epochs, dataset=dataset, limit_train=plan.limit_train, init=arm.init,
                            threads=threads, progress=progress)
    finals, failures = run_cells(cells, out / "runs.csv", executor)   # failed cells: 'failed' rows, the study goes on
    print_summary(finals, out / "runs.csv")
    return failures
