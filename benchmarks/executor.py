"""Where cells run: `--executor local` (the default: one worker process at a time on this machine) or
`--executor ray` (Ray tasks across a cluster: dualbench.ray_executor, and bench.on_ray for bench).
Shared by run, study and bench.

This module never imports ray; choosing the local executor (or not choosing one) never does either.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

from dualbench.common.errors import UserError

RAY_EXTRA = "dualbench[cluster]"


@dataclass(frozen=True)
class Executor:
    kind: str = "local"            # local | ray
    address: Optional[str] = None  # ray: auto | HOST:PORT of an existing cluster; None starts a local Ray instance
    ship_data: bool = False        # ray: send the driver's dataset arrays with the cells instead of the nodes' copies

    # run.py calls this instead of importing dualbench.ray_executor, which imports run.py (the worker code it
    # runs on the nodes): no import circle. bench/pool.py hands its groups to bench.on_ray itself.
    def run_cells(self, cells):
        """(cell, returncode, result) for each run cell as its Ray task finishes."""
        from dualbench.ray_executor import run_cells_on_ray
        return run_cells_on_ray(cells, self)


LOCAL = Executor()


def is_ray(executor):
    return executor is not None and executor.kind == "ray"


def add_arguments(parser, ship_data=True):
    """--executor, --ray-address (and --ship-data) on a subcommand that runs cells."""
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local: one worker process at a time on this machine (default); ray: cells as Ray tasks "
                             f"across a cluster (needs pip install '{RAY_EXTRA}')")
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="with --executor ray: join this existing Ray cluster (auto: the one started on this "
                             "machine by `ray start`); without it a local Ray instance is started")
    if ship_data:
        parser.add_argument("--ship-data", action="store_true",
                            help="with --executor ray: send the driver's dataset arrays to the nodes through Ray's "
                                 "object store (small datasets) instead of using each node's own copy")


def require_ray():
    """Ray is importable, else the one-line error naming the extra that installs it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: pip install '{RAY_EXTRA}'") from None


def from_args(args):
    """The executor the command line asks for; options that need --executor ray are refused without it."""
    kind = getattr(args, "executor", "local") or "local"
    address = getattr(args, "ray_address", None)
    ship = bool(getattr(args, "ship_data", False))
    if kind != "ray":
        for given, option in ((address, "--ray-address"), (ship, "--ship-data")):
            if given:
                raise UserError(f"{option} needs --executor ray")
        return LOCAL
    require_ray()
    return Executor("ray", address or None, ship)


@contextlib.contextmanager
def session(executor):
    """For the ray executor: connected to the cluster (or a local Ray instance) for the whole command."""
    if not is_ray(executor):
        yield
        return
    from dualbench.ray_executor import connected
    with connected(executor):
        yield
