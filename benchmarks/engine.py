"""The framework-blind training loop of one cell (task x backend x seed), run inside a worker process.

It calls only the backend interface (device, models, data, weights, train), so the same loop drives
torch and paddle: the same batches, the same early stopping and best-checkpoint rules, the same rows.
"""
import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

from tqdm import tqdm

from dualbench import backends
from dualbench.common.data.sources import load_dataset
from dualbench.common.data.augment import batch_transform
from dualbench.common.data.split import epoch_batches, eval_batches, order_hash, prepare_splits
from dualbench.common.fsutil import atomic_path
from dualbench.common.init import shared_weights
from dualbench.common.results import host_metadata, now
from dualbench.common.tasks import get_task, with_overrides

EVAL_BATCH = 1000
PROBE_SAMPLES = 256   # fixed first training samples on which the output gradient is measured


def new_run_id():
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


KEY_FIELDS = ("task", "backend", "seed", "epochs", "lr", "batch_size", "augment", "dataset", "data_path",
              "limit_train", "init", "device", "threads", "deterministic")


def cell_key(cell):
    """A stable id of what a cell computes; a rerun with the same arguments skips finished keys."""
    text = json.dumps({k: cell.get(k) for k in KEY_FIELDS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _improved(monitor, value, best):
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


def run_cell(cell, progress=True):
    """Train and evaluate one cell; returns (rows, checkpoint path or None)."""
    task = with_overrides(get_task(cell["task"]), cell.get("lr"), cell.get("batch_size"), cell.get("augment"))
    backend = backends.load(cell["backend"])
    dev, dev_info = backend.device.configure(cell["threads"], cell.get("device", "cpu"),
                                             cell.get("deterministic", False))
    splits, data_meta = cell_data(cell, task)
    seed = int(cell["seed"])
    backend.device.seed(seed)
    model = backend.models.build_model(task.model)
    if cell.get("init", "own") == "shared":
        backend.weights.import_weights(model, shared_weights(task.model, seed))
    state = backend.train.make_state(task, model, dev)
    epochs = int(cell.get("epochs") or task.protocol.epochs)
    n_train = len(splits.train_y)
    has_val = splits.val_x is not None and len(splits.val_y) > 0

    def loader(x, y, batches, transform=None):
        return backend.data.make_loader(x, y, batches, dev, transform)

    probe = loader(splits.train_x, splits.train_y, [list(range(min(PROBE_SAMPLES, n_train)))])
    base = {"run_id": cell["run_id"], "cell_key": cell_key(cell), "task": task.name, "backend": backend.NAME,
            "seed": seed, "epochs_planned": epochs,
            "n_train": n_train, "n_val": len(splits.val_y) if has_val else 0, "n_test": len(splits.test_y),
            "batch_size": task.protocol.batch_size, "augment": task.protocol.augment,
            "deterministic": bool(cell.get("deterministic", False)), "init": cell.get("init", "own"),
            "init_scheme": "shared-numpy" if cell.get("init") == "shared" else f"{backend.NAME}:{task.model.init}",
            **data_meta, **dev_info, **host_metadata()}
    grad_init = backend.train.output_gradient(state, probe)
    rows, status, best = train_epochs(backend, state, splits, loader, probe, base, epochs, progress)
    rows[0]["output_grad_init"] = grad_init
    if status == "diverged":
        return rows, None
    return rows, finish_cell(cell, backend, state, splits, loader, rows, status, best)


def cell_data(cell, task):
    """(the task's splits of the cell's dataset, the data columns of its rows); one copy of the data is kept."""
    if cell.get("shipped_data"):   # arrays the driver sent with the cell (--executor ray --ship-data)
        from dualbench.common.data.remote import load_shipped
        dataset = load_shipped(cell["shipped_data"])
    else:
        dataset = load_dataset(cell["dataset"], cell.get("data_path"))
    splits = prepare_splits(dataset, task, cell.get("limit_train"))
    return splits, {"dataset": dataset.name, "dataset_source": dataset.source, "dataset_sha256": dataset.sha256,
                    "synthetic": dataset.synthetic}


def train_epochs(backend, state, splits, loader, probe, base, epochs, progress):
    """The epoch loop: a row per epoch, validation, the schedule, best checkpoint and early stopping; stops at
    the first non-finite loss or weight. Returns (rows, status, (best epoch, its weights))."""
    task, seed, n_train = state.task, base["seed"], base["n_train"]
    proto = task.protocol
    rows = []
    best_value = best_weights = best_epoch = None
    stale = steps_done = 0
    status = "ok"
    bar = tqdm(total=epochs * n_train, unit="img", unit_scale=True, file=sys.stderr, leave=False,
               desc=f"{task.name} {backend.NAME} seed {seed}", disable=not progress, mininterval=0.5)
    for epoch in range(1, epochs + 1):
        batches = epoch_batches(n_train, proto.batch_size, seed, epoch, proto.drop_last)
        lr = backend.train.current_lr(state)
        start = time.perf_counter()
        augment = batch_transform(proto.augment, seed, epoch)
        train = backend.train.train_epoch(state, loader(splits.train_x, splits.train_y, batches, augment),
                                          bar.update)
        backend.device.synchronize(state.dev)
        seconds = time.perf_counter() - start
        done_any = train["n"] > 0   # a loss that is NaN at the epoch's first step leaves no epoch mean
        row = {**base, "epoch": epoch, "status": "ok", "train_loss": train["loss"] if done_any else None,
               "train_acc": train["acc"] if done_any else None,
               "lr": lr, "epoch_seconds": seconds, "samples_per_s": train["n"] / seconds if train["n"] else None,
               "batch_order_hash": order_hash(batches), "timestamp": now()}
        rows.append(row)
        diverged_step = train["diverged_step"]
        if diverged_step is None and not backend.train.parameters_finite(state.model):
            diverged_step = len(batches)
        if diverged_step is not None:
            bar.close()
            mark_diverged(rows, train, steps_done + diverged_step, epoch, backend, task, seed)
            return rows, "diverged", (None, None)
        steps_done += len(batches)
        row["output_grad"] = backend.train.output_gradient(state, probe)
        val = backend.train.evaluate(state, loader(splits.val_x, splits.val_y,
                                                   eval_batches(len(splits.val_y), EVAL_BATCH))) if base["n_val"] else None
        backend.train.scheduler_step(state, val["loss"] if val else None)
        if val:
            row.update({"val_loss": val["loss"], "val_acc": val["acc"]})
        if val and (proto.best_checkpoint or proto.early_stop_patience):
            value = val["loss"] if proto.monitor == "val_loss" else val["acc"]
            if _improved(proto.monitor, value, best_value):
                best_value, best_epoch, stale = value, epoch, 0
                if proto.best_checkpoint:
                    best_weights = backend.weights.export_weights(state.model)
            else:
                stale += 1
            if proto.early_stop_patience and stale >= proto.early_stop_patience:
                status = "early_stopped"
                break
    bar.close()
    return rows, status, (best_epoch, best_weights)


def mark_diverged(rows, train, step, epoch, backend, task, seed):
    """The last row says where the loss or the weights stopped being finite (and it is printed)."""
    last_finite = train["loss"] if train["n"] else (rows[-2]["train_loss"] if len(rows) > 1 else None)
    rows[-1].update({"status": "diverged", "diverged_step": step, "last_finite_loss": last_finite})
    print(f"dualbench: {task.name} {backend.NAME} seed {seed} diverged at step {step} (epoch {epoch}): "
          f"loss {train.get('bad_loss', 'finite, weights not')}, last finite epoch-mean loss {last_finite}",
          file=sys.stderr)


def finish_cell(cell, backend, state, splits, loader, rows, status, best):
    """Test accuracy (at the best epoch's weights where the task keeps them), eval-mode accuracy on the whole
    training split, on the last row; the checkpoint written atomically into OUT/checkpoints. Returns its path."""
    best_epoch, best_weights = best
    if best_weights is not None:
        backend.weights.import_weights(state.model, best_weights)
    test = backend.train.evaluate(state, loader(splits.test_x, splits.test_y,
                                                eval_batches(len(splits.test_y), EVAL_BATCH)))
    # eval-mode accuracy on the whole training split, as seed 003 reports "train accuracy"
    final_train = backend.train.evaluate(state, loader(splits.train_x, splits.train_y,
                                                       eval_batches(len(splits.train_y), EVAL_BATCH)))
    rows[-1].update({"status": status, "test_loss": test["loss"], "test_acc": test["acc"],
                     "final_train_acc": final_train["acc"],
                     "best_epoch": best_epoch if best_epoch is not None else rows[-1]["epoch"]})
    if not cell.get("out_dir"):
        return None
    ckpt_dir = Path(cell["out_dir"]) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = ckpt_dir / f"{state.task.name}-{backend.NAME}-seed{rows[-1]['seed']}{backend.CHECKPOINT_SUFFIX}"
    with atomic_path(checkpoint, suffix=backend.CHECKPOINT_SUFFIX) as tmp:
        backend.weights.save_checkpoint(state.model, tmp)
    return checkpoint
