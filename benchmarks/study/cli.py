"""The `dualbench study` command."""
import sys
from pathlib import Path

from dualbench.study.running import run_study
from dualbench.study.section import build_section


def cmd_study(args):
    from dualbench import backends
    from dualbench.executor import from_args, session
    from dualbench.run import parse_seeds
    from dualbench.study.studies import STUDIES, get_study
    if args.name == "list":
        for study in STUDIES.values():
            data = ", ".join(p.dataset + (f" (else {p.fallback})" if p.fallback else "") for p in study.data)
            print(f"{study.name:20s} {study.title} — {len(study.arms)} arms on {data}")
        return
    executor = from_args(args)   # first: asking for Ray without it installed is a one-line error
    study = get_study(args.name)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    failures = 0
    if not args.report_only:
        names = backends.parse_backends(args.backend)
        with session(executor):
            failures = run_study(study, names, args.out, args.datasets, seeds, args.threads, not args.no_progress,
                                 executor)
    path = build_section(study, args.out)
    print(f"study section written to {path}")
    if failures:
        print(f"dualbench study: {failures} cell(s) failed (status 'failed' in "
              f"{Path(args.out) / study.name / 'runs.csv'}); rerun the same command to retry them", file=sys.stderr)
        raise SystemExit(1)


def register(subparsers):
    from dualbench.executor import add_arguments as add_executor_arguments
    p = subparsers.add_parser("study", help="run a seed-note study in both backends and write its report section")
    p.add_argument("name", help="study name (mse-vs-ce, mlp-regularisation, lenet, cnn-variants, food11) or 'list'")
    p.add_argument("--backend", "--backends", default="torch,paddle", help="torch, paddle or torch,paddle")
    p.add_argument("--datasets", help="only these of the study's datasets (comma list)")
    p.add_argument("--seeds", help="override the study's seeds (comma list)")
    p.add_argument("--threads", type=int, help="math threads per framework (default: all cores)")
    p.add_argument("--out", type=Path, default=Path("results/studies"),
                   help="folder of study folders (default: results/studies)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the section from runs.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_arguments(p)
    p.set_defaults(func=cmd_study)
