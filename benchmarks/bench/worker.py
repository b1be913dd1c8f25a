"""Bench worker: one framework per process; times the cells the parent sends, one at a time.

`python -m dualbench.bench.worker BACKEND RESULT_FD`. Writes {"ready": true} to RESULT_FD once its
framework is imported (or failed to import), then reads cells as JSON lines on stdin until EOF; for
each cell writes one JSON line to file descriptor RESULT_FD: {"rows": [...]}, {"error": "...", "user": bool}
(the error's last line; out of memory names the batch size), or {"error": "...", "diverged": true} when the
loss or the weights became NaN/Inf. A framework that cannot be imported answers every cell with its error.
Framework output on stdout/stderr never mixes with results. The parent keeps one worker per backend
alive for a repeat and alternates between them, so backends are interleaved task by task while each
framework is imported once per repeat.

Cell kinds (all framework-blind; they call backends.<name>.{device,models,train,data,speed}):
- "speed": warm-up, then `windows` timed windows of `steps` steps through the native DataLoader (loop
  "engine"), optionally alternating with windows over pre-loaded device tensors (loop "bare") on the
  same model, optimizer and batch size. The device is synchronised before every clock read.
- "infer": inference latency: eval mode, no autograd, one batch per call over pre-loaded device
  tensors, the device synchronised and the clock read around every call; median and 95th percentile
  with order-statistic CIs (loop "infer").
- "ttt": time to target accuracy: train epochs through the engine's train_epoch until the evaluation
  accuracy reaches the task's target (or the epoch budget runs out).
A cell names a built-in task, or carries "pair" (two model SPECs, an input shape, classes, optimizer):
a user's model pair, trained on seeded random inputs and labels over pre-loaded tensors (loop "bare",
there is no dataset to read). Every cell first applies its settings: threads, and the knobs (oneDNN,
cuDNN autotuning, TF32) through backends.<name>.speed.apply_settings; the row records what was in effect.
Divergence: the loss is read (outside the timed region) after every warm-up step and at the end of every
window, the weights at the end of the cell; a NaN/Inf stops the cell, which then measured nothing.
The timed loops are in bench.timing, the data they train on in bench.workload.
"""
import json
import math
import os
import sys
import traceback

from dualbench import backends
from dualbench.bench.timing import Diverged, run_infer_cell, run_speed_cell, run_ttt_cell
from dualbench.common.errors import UserError
from dualbench.common.results import host_metadata, now
from dualbench.timings.settings import knobs_text, parse_knobs
from dualbench.timings.table import pair_label
from dualbench.worker import die_with_parent, error_line

OOM_ADVICE = "try a smaller --batch-size"


def run_bench_cell(cell, backend, speed, cache):
    """One cell -> its rows, each carrying the cell's identity and the machine/framework metadata."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan   # before this cell adds its own
    dev, dev_info = backend.device.configure(int(cell["threads"]), cell.get("device", "cpu"))
    knobs = speed.apply_settings(parse_knobs(cell.get("knobs")), dev)
    runners = {"ttt": run_ttt_cell, "infer": run_infer_cell, "speed": run_speed_cell}
    rows = runners[cell["kind"]](cell, backend, speed, dev, cache)
    identity = {k: cell[k] for k in ("suite", "task", "backend", "mode", "precision", "batch_size", "repeat",
                                     "seed", "run_id", "stage", "aa_side") if k in cell}
    meta = {**dev_info, **host_metadata(), "timestamp": now(), "load_avg": load, "cpu_count": os.cpu_count(),
            "worker_pid": os.getpid(),
            "status": "ok", "knobs": cell.get("knobs") or "", "knobs_in_effect": knobs_text(knobs),
            "model_spec": pair_label(cell.get("pair"))}
    out = []
    for row in rows:
        row = {**identity, **row, **meta}
        row["cell_key"] = cell["keys"][row["loop"]]
        out.append(row)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    backend_name, result_fd = argv[0], int(argv[1])
    die_with_parent()
    results = os.fdopen(result_fd, "w", buffering=1)
    load_error = None
    try:
        backend = backends.load(backend_name)
        speed = backends.load(backend_name, "speed")
    except UserError as e:
        load_error = {"error": str(e), "user": True}
    except Exception as e:   # noqa: BLE001 - a broken install: every cell of this backend fails with it
        traceback.print_exc()
        load_error = {"error": error_line(e, {}, OOM_ADVICE), "user": False}
    results.write(json.dumps({"ready": True}) + "\n")   # imported: the parent may start timing cells
    cache = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        cell = json.loads(line)
        if load_error is not None:
            results.write(json.dumps(load_error) + "\n")
            continue
        try:
            reply = {"rows": run_bench_cell(cell, backend, speed, cache)}
        except UserError as e:
            reply = {"error": str(e), "user": True}
        except Diverged as e:
            reply = {"error": str(e), "diverged": True}
        except Exception as e:   # noqa: BLE001 - reported to the parent, which goes on with the next cell
            traceback.print_exc()
            reply = {"error": error_line(e, cell, OOM_ADVICE), "user": False,
                     "traceback": traceback.format_exc(limit=6)}
        results.write(json.dumps(reply, default=float) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(130)
