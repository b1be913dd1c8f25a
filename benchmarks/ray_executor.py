"""`--executor ray`: the cells of `dualbench run`, `study` and `bench` as Ray tasks across a cluster.

Imported only when --executor ray is chosen; the local executor never imports ray.

run / study: every cell is one Ray task that reserves the cell's threads as CPUs (and a GPU for --device
gpu), checks the node's copy of the dataset against the checksum the driver recorded (or takes the arrays
the driver shipped, --ship-data), and runs the same worker process as the local executor. The task streams
back its node first, then the cell's rows and checkpoint; only the driver writes files (runs.csv under its
lock, checkpoints atomically), so the nodes need no shared file system.

bench: a repeat group is split by configuration into one shard per node. A shard is one Ray task pinned to
its node that reserves every CPU and GPU of that node, so no other dualbench cell runs there while it
times, and it drives the same two bench workers as the local executor, interleaved as planned. A
configuration stays on the node where its earlier pairs were measured, so both halves of a pair, and all
pairs of a ratio, come from one node.

Faults: a Ray worker or node that dies mid-cell makes that cell a `failed` row naming the node, and the
other cells go on; Ctrl-C and SIGTERM cancel the outstanding tasks (finished rows are already written).
A rerun skips finished cells by cell key, whichever executor wrote them.
"""
import collections
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

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


# ---------------------------------------------------------------------------------------------
# bench: one Ray task per (repeat group, node), holding the whole node


def group_on_node(group, expected=None):
    """The Ray task of one shard of a repeat group (a generator): this node's name first, then one
    {index, reply, seconds} per cell in the planned order, from the same persistent bench workers (one per
    backend) as the local executor."""
    from dualbench.bench.pool import run_alone, start_worker, worker_key
    from dualbench.common.data.remote import node_dataset_problem
    from dualbench.common.results import node_metadata
    yield {"node": node_metadata()}
    problems = {name: node_dataset_problem(name, None, sha) for name, sha in (expected or {}).items()}
    runnable = [c for c in group["cells"] if not problems.get(c.get("dataset"))]
    workers, interrupted = {}, True
    try:
        for key in dict.fromkeys(worker_key(c) for c in runnable):   # the imports overlap, as in bench.execute
            workers[key] = start_worker(key)
        for worker in workers.values():
            worker.wait_ready()
        for index, cell in enumerate(group["cells"]):
            problem = problems.get(cell.get("dataset"))
            if problem:
                yield {"index": index, "reply": {"error": problem}, "seconds": 0.0}
                continue
            key, started = worker_key(cell), time.perf_counter()
            if key not in workers:
                workers[key] = start_worker(key)
            reply = run_alone(workers, key, cell)
            if reply.get("died"):      # a crashed worker: restart it for the next cell
                workers.pop(key).close(kill=True)
            yield {"index": index, "reply": reply, "seconds": time.perf_counter() - started}
        interrupted = False
    finally:
        for worker in workers.values():
            worker.close(kill=interrupted)


def placement_key(cell):
    """What must stay on one node: a configuration (its ratio's pairs), whatever the repeat or stage."""
    from dualbench.bench.planning import config_id
    return (cell["suite"], cell["device"], *config_id(cell))


def earlier_hosts(csv_path):
    """{placement key: host} of the configurations already measured in bench.csv (the latest row's node)."""
    from dualbench.common.bench_table import BENCH_COLUMNS, row_status
    from dualbench.common.results import read_csv
    if not Path(csv_path).exists() or Path(csv_path).stat().st_size == 0:
        return {}
    frame = read_csv(csv_path, BENCH_COLUMNS)
    frame = frame[(row_status(frame) == "ok") & frame["node"].notna() & (frame["loop"] != "ttt")]
    out = {}
    for row in frame.to_dict("records"):
        knobs = row.get("knobs") if isinstance(row.get("knobs"), str) else ""
        cell = {**row, "kind": "infer" if row["loop"] == "infer" else "speed", "knobs": knobs,
                "stage": row.get("stage") if isinstance(row.get("stage"), str) else "equal",
                "batch_size": int(row["batch_size"]), "threads": int(row["threads"])}
        out[placement_key(cell)] = row["node"]
    return out


def assign_nodes(keys, nodes, earlier):
    """{placement key: node id}: the node where the configuration's earlier pairs were measured when it is
    still in the cluster, else the node with the fewest configurations so far (first in order on a tie)."""
    by_host = {}
    for node in nodes:
        by_host.setdefault(node["host"], node["id"])
    load = collections.Counter()
    out = {}
    for key in keys:
        node = by_host.get(earlier.get(key))
        if node is None:
            node = min((n["id"] for n in nodes), key=lambda i: (load[i], [n["id"] for n in nodes].index(i)))
        out[key] = node
        load[node] += 1
    return out


def shard_groups(groups, assignment):
    """{node id: [shards in plan order]}: each group split by the node of each cell's configuration, the cells
    of a shard in their planned (interleaved) order."""
    queues = collections.defaultdict(collections.deque)
    for group in groups:
        parts = {}
        for cell in group["cells"]:
            parts.setdefault(assignment[placement_key(cell)], []).append(cell)
        for node, cells in parts.items():
            queues[node].append({**group, "cells": cells})
    return queues


def bench_nodes(groups):
    """The live nodes that can run every group (enough CPUs for the threads, a GPU for --device gpu)."""
    nodes = alive_nodes()
    threads = max(int(c["threads"]) for g in groups for c in g["cells"])
    gpu = any(c["device"] == "gpu" for g in groups for c in g["cells"])
    check_fits(float(threads), 1.0 if gpu else 0.0, nodes)
    return [n for n in nodes if n["cpus"] >= threads and (n["gpus"] >= 1 or not gpu)]


def execute_on_ray(groups, csv_path, progress=True, durations=None, deadline=None, desc="bench", executor=None):
    """bench.execute on a Ray cluster: the same contract (rows appended as each cell finishes, returns the
    problems and the groups not started), with each node running its shards one after the other."""
    from tqdm import tqdm

    from dualbench.bench.pool import WORKER_START_SECONDS, cell_seconds
    from dualbench.common.bench_table import BENCH_COLUMNS, problem_rows
    from dualbench.common.data.remote import driver_checksum
    from dualbench.common.results import append_rows
    durations = {} if durations is None else durations
    if not groups:
        return [], []
    nodes = bench_nodes(groups)
    cells = [c for g in groups for c in g["cells"]]
    expected = {name: driver_checksum(name) for name in dict.fromkeys(c.get("dataset") for c in cells) if name}
    assignment = assign_nodes(dict.fromkeys(placement_key(c) for c in cells), nodes, earlier_hosts(csv_path))
    queues = shard_groups(groups, assignment)
    task = ray.remote(group_on_node)
    bar = tqdm(total=len(cells), unit="cell", file=sys.stderr, disable=not progress,
               desc=f"{desc} on Ray ({len(nodes)} node(s))")
    problems, left, running = [], [], {}

    def record(cell, reply, seconds, node):
        if "error" in reply:
            status = "diverged" if reply.get("diverged") else "failed"
            problems.append((cell, status, reply["error"]))
            append_rows(csv_path, [{**row, **node} for row in problem_rows(cell, status, reply["error"])],
                        BENCH_COLUMNS)
            bar.write(f"dualbench bench: {cell['task']} {cell['backend']} {cell['kind']} repeat {cell['repeat']} "
                      f"{status} on {node.get('node', '?')}: {reply['error']}")
        else:
            append_rows(csv_path, reply["rows"], BENCH_COLUMNS)
            durations.setdefault((cell["task"], cell["backend"], cell["kind"]), []).append(seconds)
        bar.update(1)

    def start_idle_nodes():
        busy = {state["node"]["id"] for state in running.values()}
        for node in nodes:
            queue = queues.get(node["id"])
            if node["id"] in busy or not queue:
                continue
            shard = queue[0]
            expected_s = WORKER_START_SECONDS + sum(cell_seconds(durations, c) for c in shard["cells"])
            if deadline is not None and time.perf_counter() + expected_s > deadline:
                left.extend(queues.pop(node["id"]))   # this node starts nothing more (as bench.execute stops)
                continue
            queue.popleft()
            needed = {name: expected[name] for name in dict.fromkeys(c.get("dataset") for c in shard["cells"])
                      if name}
            gen = task.options(num_cpus=node["cpus"], num_gpus=node["gpus"], max_retries=0,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node["id"], soft=False)
                               ).remote(shard, needed)
            running[gen] = {"node": node, "shard": shard, "next": 0, "where": {"node": node["host"]}}

    def lost(state, error):
        """The shard's worker or node died: the cell in flight failed; the rest of the shard goes on, on the
        same node if it is still there, else on the others."""
        shard, index = state["shard"], state["next"]
        if index < len(shard["cells"]):
            record(shard["cells"][index], {"error": lost_line(error, state["where"])}, 0.0, state["where"])
        rest = {**shard, "cells": shard["cells"][index + 1:]}
        alive = {n["id"] for n in alive_nodes()}
        if state["node"]["id"] in alive:
            if rest["cells"]:
                queues[state["node"]["id"]].appendleft(rest)
            return
        nodes[:] = [n for n in nodes if n["id"] in alive]
        if not nodes:
            raise UserError("no node able to run the benchmark is left in the Ray cluster; finished cells are "
                            "saved, rerun the same command to resume")
        orphans = ([rest] if rest["cells"] else []) + list(queues.pop(state["node"]["id"], []))
        moved = assign_nodes(dict.fromkeys(placement_key(c) for s in orphans for c in s["cells"]), nodes, {})
        for node, shards in shard_groups(orphans, moved).items():
            queues[node].extend(shards)

    try:
        while True:
            start_idle_nodes()
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
            raise_pending_signal()
            for gen in ready:
                state = running[gen]
                item, error = next_item(gen)
                if item is None:
                    del running[gen]
                    if error is not None:
                        lost(state, error)
                elif "node" in item:
                    state["where"] = item["node"]
                else:
                    record(state["shard"]["cells"][item["index"]], item["reply"], item["seconds"], state["where"])
                    state["next"] = item["index"] + 1
    finally:
        bar.close()
        cancel(running)
    left.sort(key=lambda shard: shard["repeat"])
    return problems, left
