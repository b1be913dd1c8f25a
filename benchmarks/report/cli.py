"""The `dualbench report` command."""
from pathlib import Path

from dualbench.report.sections import build_report


def cmd_report(args):
    path = build_report(args.dir, args.out, plots=not args.no_plots)
    print(f"report written to {path}")


def register(subparsers):
    p = subparsers.add_parser("report", help="Markdown report + PNG plots from DIR's runs.csv, bench.csv, parity.csv")
    p.add_argument("dir", nargs="?", type=Path, default=Path("runs"), help="results folder (default: runs/)")
    p.add_argument("--out", type=Path, help="report file (default: DIR/report.md); plots go beside it in plots/")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_report)
