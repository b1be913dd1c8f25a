"""`--executor ray`, the shared part: connecting to a cluster, Ctrl-C and SIGTERM between Ray calls, the
live nodes, and the cells of `dualbench run` and `study` as Ray tasks. `dualbench bench` runs its repeat
groups through the same connection (dualbench.bench.on_ray).

Imported only when --executor ray is chosen; the local executor never imports ray.

run / study: every cell is one Ray task that reserves the cell's threads as CPUs (and a GPU for --device
gpu), checks the node's copy of the dataset against the checksum the driver recorded (or takes the arrays
the driver shipped, --ship-data), and runs the same worker process as the local executor. The task streams
back its node first, then the cell's rows and checkpoint; only the driver writes files (runs.csv under its
lock, checkpoints atomically), so the nodes need no shared file system.

Faults: a Ray worker or node that dies mid-cell makes that cell a `failed` row naming the node, and the
other cells go on; Ctrl-C and SIGTERM cancel the outstanding tasks (finished rows are already written).
A rerun skips finished cells by cell key, whichever executor wrote them.
"""
import contextlib
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

import ray

from dualbench.common.errors import UserError

WAIT_SECONDS = 0.5   # ray.wait returns at least this often, so that Ctrl-C and SIGTERM act at once


# ---------------------------------------------------------------------------------------------
# The cluster


@contextlib.contextmanager
def connected(executor):
    """Join the cluster at executor.address, or start a local Ray instance with this machine's CPUs; shut
    down (cancelling what is left of this command's tasks) at the end. A caller already connected keeps
    its connection."""
    if ray.is_initialized():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    where = f"the Ray cluster at {executor.address}" if executor.address else "a local Ray instance"
    try:
        if executor.address:
            ray.init(address=executor.address, logging_level=logging.ERROR)
        else:   # "local": never attach to a cluster that happens to run on this machine
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise UserError(f"cannot start or join {where}: {first_line(e)}") from None
    finally:
        if handler is not None:   # ray.init installs its own; the CLI's turns SIGTERM into a clean exit 143
            signal.signal(signal.SIGTERM, handler)
    nodes = alive_nodes()
    print(f"dualbench: {where}: {len(nodes)} node(s), {sum(n['cpus'] for n in nodes):g} CPUs, "
          f"{sum(n['gpus'] for n in nodes):g} GPUs", file=sys.stderr)
    try:
        with deferred_signals():
            yield
    finally:
        ray.shutdown()


_deferred = {"handlers": {}, "pending": []}


@contextlib.contextmanager
def deferred_signals():
    """Ctrl-C and SIGTERM noted, then acted on by raise_pending_signal between Ray calls: an exception raised
    by a signal handler inside Ray's C code comes out as a SystemError, not as the KeyboardInterrupt or
    Terminated the CLI turns into exit 130 / 143."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handlers = {s: h for s, h in handlers.items() if callable(h)}   # an ignored signal stays ignored
    _deferred.update(handlers=handlers, pending=[])
    for signum in handlers:
        signal.signal(signum, lambda signum, frame: _deferred["pending"].append(signum))
    try:
        yield
        raise_pending_signal()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def raise_pending_signal():
    """Run the handler of a signal noted since the last call (it raises KeyboardInterrupt or Terminated)."""
    if _deferred["pending"]:
        signum = _deferred["pending"][0]
        _deferred["pending"].clear()
        _deferred["handlers"][signum](signum, None)


def first_line(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def alive_nodes():
    """The cluster's live nodes: {id, host, cpus, gpus}, in a stable order (by host, then id)."""
    nodes = [{"id": n["NodeID"], "host": n["NodeManagerHostname"], "cpus": float(n["Resources"].get("CPU", 0)),
              "gpus": float(n["Resources"].get("GPU", 0))} for n in ray.nodes() if n.get("Alive")]
    return sorted(nodes, key=lambda n: (n["host"], n["id"]))


def cancel(generators):
    """Stop this command's outstanding tasks (force: their worker processes die, the cells' with them)."""
    for gen in list(generators):
        try:
            ray.cancel(gen, force=True)
        except Exception:   # noqa: BLE001 - the cluster may already be gone
            pass


def next_item(gen):
    """The next item a task streamed: (item, None), (None, error) when its worker or node died or the task
    raised, or (None, None) when it ended."""
    try:
        return ray.get(next(gen)), None
    except StopIteration:
        return None, None
    except ray.exceptions.RayError as e:
        return None, e


def lost_line(error, node):
    """The error of a cell whose Ray worker (or node) died under it."""
    where = f"node {node['node']}" if node.get("node") else "a node of the Ray cluster"
    return f"Ray worker lost on {where} mid-cell ({first_line(error)})"


def reservation(cell, nodes):
    """(CPUs, GPUs) a run cell reserves: its threads, and a GPU for --device gpu (auto: when the cluster has one)."""
    gpu = cell.get("device") == "gpu" or (cell.get("device") == "auto" and any(n["gpus"] for n in nodes))
    return float(cell["threads"]), 1.0 if gpu else 0.0


def check_fits(cpus, gpus, nodes):
    """A task no node can hold would wait forever: refuse it with one line."""
    if not any(n["cpus"] >= cpus and n["gpus"] >= gpus for n in nodes):
        largest = max((n["cpus"] for n in nodes), default=0)
        need = f"{cpus:g} CPUs" + (" and a GPU" if gpus else "")
        raise UserError(f"no node of the Ray cluster has {need} (the largest has {largest:g} CPUs, "
                        f"{sum(1 for n in nodes if n['gpus'])} node(s) have a GPU); lower --threads")


# ---------------------------------------------------------------------------------------------
# run / study: one Ray task per cell


def cell_on_node(cell, shipped=None, expected_sha256=None):
    """The Ray task of one run cell (a generator): this node's name first, then {returncode, result} of the
    same worker process the local executor runs, with the checkpoint's bytes for the driver to write."""
    from dualbench.run import run_worker
    from dualbench.common.data.remote import node_dataset_problem, save_shipped
    from dualbench.common.results import node_metadata
    node = node_metadata()
    yield {"node": node}
    if shipped is None:
        problem = node_dataset_problem(cell["dataset"], cell.get("data_path"), expected_sha256)
        if problem:
            yield {"returncode": 1, "result": {"error": problem, "node": node}}
            return
    with tempfile.TemporaryDirectory(prefix="dualbench-ray-cell-") as tmp:
        cell = {**cell, "out_dir": tmp, "progress": False}   # neither is part of the cell key
        if shipped is not None:
            cell["shipped_data"] = save_shipped(Path(tmp) / "dataset.npz", shipped)
        with open(Path(tmp) / "worker.log", "w+") as log:
            rc, result = run_worker(cell, cell["threads"], stderr=log)
            log.seek(0)
            text = log.read()
        if text.strip():
            sys.stderr.write(text)   # Ray forwards it to the driver's terminal, as the local worker's is printed
        if rc == 0 and result and "rows" in result:
            if result.get("checkpoint"):
                checkpoint = Path(result["checkpoint"])
                result = {**result, "checkpoint_name": checkpoint.name, "checkpoint_bytes": checkpoint.read_bytes()}
            yield {"returncode": 0, "result": result}
            return
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        error = (result or {}).get("error") or (lines[-1] if lines else f"worker exited with code {rc}")
        yield {"returncode": 1, "result": {"error": f"{error} (on node {node['node']})", "node": node}}


def receive(cell, result):
    """Write a cell's checkpoint where the local executor would have (the driver's OUT/checkpoints)."""
    from dualbench.common.fsutil import atomic_write_bytes
    if "checkpoint_bytes" in result:
        result = dict(result)
        path = Path(cell["out_dir"]) / "checkpoints" / result.pop("checkpoint_name")
        atomic_write_bytes(path, result.pop("checkpoint_bytes"))
        result["checkpoint"] = str(path)
    return result


def cell_data(cells, ship):
    """{(dataset, data_path): the arrays in the object store (ship) or the driver's sha256 of its copy}."""
    from dualbench.common.data.remote import driver_checksum, shipped_arrays
    data = {}
    for key in dict.fromkeys((c["dataset"], c.get("data_path")) for c in cells):
        data[key] = ray.put(shipped_arrays(*key)) if ship else driver_checksum(*key)
    return data


def run_cells_on_ray(cells, executor):
    """(cell, returncode, result) for each cell as its Ray task finishes; every cell is submitted at once and
    Ray places each on a node with room for its threads."""
    from tqdm import tqdm
    if not cells:
        return
    nodes = alive_nodes()
    for cpus, gpus in dict.fromkeys(reservation(c, nodes) for c in cells):
        check_fits(cpus, gpus, nodes)
    data = cell_data(cells, executor.ship_data)
    task = ray.remote(cell_on_node)
    running = {}
    for cell in cells:
        cpus, gpus = reservation(cell, nodes)
        key = (cell["dataset"], cell.get("data_path"))
        args = (data[key], None) if executor.ship_data else (None, data[key])
        gen = task.options(num_cpus=cpus, num_gpus=gpus, max_retries=0).remote(cell, *args)
        running[gen] = {"cell": cell, "node": {}}
    bar = tqdm(total=len(cells), unit="cell", file=sys.stderr, disable=not cells[0].get("progress", True),
               desc=f"cells on Ray ({len(nodes)} node(s))")
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
            raise_pending_signal()
            for gen in ready:
                state = running[gen]
                item, error = next_item(gen)
                if item is not None and "node" in item:
                    state["node"] = item["node"]
                    continue
                del running[gen]
                bar.update(1)
                if error is not None:
                    yield state["cell"], 1, {"error": lost_line(error, state["node"]), "node": state["node"]}
                elif item is not None:
                    yield state["cell"], item["returncode"], receive(state["cell"], item["result"])
    finally:
        bar.close()
        cancel(running)
