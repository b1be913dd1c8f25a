"""`dualbench bench --executor ray`: the repeat groups of a bench run as Ray tasks across a cluster.

A repeat group is split by configuration into one shard per node. A shard is one Ray task pinned to its
node that reserves every CPU and GPU of that node, so no other dualbench cell runs there while it times,
and it drives the same two bench workers as the local executor, interleaved as planned. A configuration
stays on the node where its earlier pairs were measured, so both halves of a pair, and all pairs of a
ratio, come from one node. A worker or node lost mid-shard makes the cell in flight a `failed` row naming
the node; the rest of the shard goes on (on the same node if it is still there, else on the others).

Imported only with --executor ray. The cluster connection, signals and node list are the shared
engine's (dualbench.ray_executor).
"""
import collections
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dualbench.common.errors import UserError
from dualbench.ray_executor import (WAIT_SECONDS, alive_nodes, cancel, check_fits, lost_line, next_item,
                                    raise_pending_signal)


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
    """What must stay on one node: a configuration (its ratio's pairs), whatever the repeat or stage. An A/A
    pair goes with its task's equal-settings configuration, so the noise floor is measured where that
    torch/paddle ratio is."""
    from dualbench.bench.planning import config_id
    return (cell["suite"], cell["device"], *config_id({**cell, "stage": "equal"} if cell.get("stage") == "aa" else cell))


def earlier_hosts(csv_path):
    """{placement key: host} of the configurations already measured in bench.csv (the latest row's node)."""
    from dualbench.timings.table import BENCH_COLUMNS, row_status
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


@dataclass
class RayBench:
    """One execute_on_ray call: where each shard is queued and running, and what it found so far."""
    csv_path: Path
    bar: object                         # tqdm
    durations: dict
    deadline: object                    # perf_counter time or None
    nodes: list
    queues: dict                        # {node id: deque of shards}
    expected: dict                      # {dataset: the driver's sha256}
    task: object                        # the Ray remote function group_on_node
    problems: list = field(default_factory=list)
    left: list = field(default_factory=list)
    running: dict = field(default_factory=dict)   # {generator: {node, shard, next, where}}


def record(run, cell, reply, seconds, node):
    """Append a finished cell's rows (or its failed/diverged rows) to bench.csv, as bench.execute does."""
    from dualbench.bench.pool import append_reply
    append_reply(run.csv_path, cell, reply, seconds, run.durations, run.problems, run.bar,
                 node=node, where=f" on {node.get('node', '?')}")


def start_idle_nodes(run):
    """Give every idle node its next shard, unless that shard would run past the deadline (then the node
    starts nothing more, as bench.execute stops)."""
    from dualbench.bench.pool import WORKER_START_SECONDS, cell_seconds
    busy = {state["node"]["id"] for state in run.running.values()}
    for node in run.nodes:
        queue = run.queues.get(node["id"])
        if node["id"] in busy or not queue:
            continue
        shard = queue[0]
        expected_s = WORKER_START_SECONDS + sum(cell_seconds(run.durations, c) for c in shard["cells"])
        if run.deadline is not None and time.perf_counter() + expected_s > run.deadline:
            run.left.extend(run.queues.pop(node["id"]))
            continue
        queue.popleft()
        needed = {name: run.expected[name] for name in dict.fromkeys(c.get("dataset") for c in shard["cells"])
                  if name}
        gen = run.task.options(num_cpus=node["cpus"], num_gpus=node["gpus"], max_retries=0,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node["id"], soft=False)
                               ).remote(shard, needed)
        run.running[gen] = {"node": node, "shard": shard, "next": 0, "where": {"node": node["host"]}}


def requeue_after_loss(run, state, error):
    """The shard's worker or node died: the cell in flight failed; the rest of the shard goes on, on the
    same node if it is still there, else on the others."""
    shard, index = state["shard"], state["next"]
    if index < len(shard["cells"]):
        record(run, shard["cells"][index], {"error": lost_line(error, state["where"])}, 0.0, state["where"])
    rest = {**shard, "cells": shard["cells"][index + 1:]}
    alive = {n["id"] for n in alive_nodes()}
    if state["node"]["id"] in alive:
        if rest["cells"]:
            run.queues[state["node"]["id"]].appendleft(rest)
        return
    run.nodes[:] = [n for n in run.nodes if n["id"] in alive]
    if not run.nodes:
        raise UserError("no node able to run the benchmark is left in the Ray cluster; finished cells are "
                        "saved, rerun the same command to resume")
    orphans = ([rest] if rest["cells"] else []) + list(run.queues.pop(state["node"]["id"], []))
    moved = assign_nodes(dict.fromkeys(placement_key(c) for s in orphans for c in s["cells"]), run.nodes, {})
    for node, shards in shard_groups(orphans, moved).items():
        run.queues[node].extend(shards)


def receive(run, gen):
    """Take the next item a running shard streamed: its node, a finished cell, or its end (or loss)."""
    state = run.running[gen]
    item, error = next_item(gen)
    if item is None:
        del run.running[gen]
        if error is not None:
            requeue_after_loss(run, state, error)
    elif "node" in item:
        state["where"] = item["node"]
    else:
        record(run, state["shard"]["cells"][item["index"]], item["reply"], item["seconds"], state["where"])
        state["next"] = item["index"] + 1


def execute_on_ray(groups, csv_path, progress=True, durations=None, deadline=None, desc="bench"):
    """bench.execute on a Ray cluster: the same contract (rows appended as each cell finishes, returns the
    problems and the groups not started), with each node running its shards one after the other."""
    from tqdm import tqdm

    from dualbench.common.data.remote import driver_checksum
    if not groups:
        return [], []
    nodes = bench_nodes(groups)
    cells = [c for g in groups for c in g["cells"]]
    expected = {name: driver_checksum(name) for name in dict.fromkeys(c.get("dataset") for c in cells) if name}
    assignment = assign_nodes(dict.fromkeys(placement_key(c) for c in cells), nodes, earlier_hosts(csv_path))
    bar = tqdm(total=len(cells), unit="cell", file=sys.stderr, disable=not progress,
               desc=f"{desc} on Ray ({len(nodes)} node(s))")
    run = RayBench(csv_path, bar, {} if durations is None else durations, deadline, nodes,
                   shard_groups(groups, assignment), expected, ray.remote(group_on_node))
    try:
        while True:
            start_idle_nodes(run)
            if not run.running:
                break
            ready, _ = ray.wait(list(run.running), num_returns=1, timeout=WAIT_SECONDS)
            raise_pending_signal()
            for gen in ready:
                receive(run, gen)
    finally:
        bar.close()
        cancel(run.running)
    run.left.sort(key=lambda shard: shard["repeat"])
    return run.problems, run.left
