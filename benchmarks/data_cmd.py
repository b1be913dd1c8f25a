"""`dualbench data`: list, prepare, verify, synth and batch-hash.

batch-hash shows that both backends train on the same bytes: each backend, in its own process,
iterates its native loader over the first epoch's batch order from common and hashes the tensors
it actually yields; common's numpy arrays give the reference hash. No framework is imported here
at module level (only inside the worker process).
"""
import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from dualbench.common.data.augment import AUGMENTATIONS
from dualbench.common.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def cmd_list(args):
    import pandas as pd

    from dualbench.common.data.prepare import describe_all
    from dualbench.common.data.catalog import cache_dir
    rows = describe_all()
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "tasks"} for r in rows])
    print(table.to_string(index=False))
    print(f"\ncache: {cache_dir()}  (set DUALBENCH_DATA to move it)\ntasks using each dataset:")
    for r in rows:
        names = ", ".join(r["tasks"]) or "none yet (usable with --dataset by tasks of the same image shape)"
        if r["tasks"] and r["dataset"].startswith("synthetic-"):
            names = "stand-in for: " + names
        print(textwrap.fill(names, width=110, initial_indent=f"  {r['dataset']:<21}",
                            subsequent_indent=" " * 23))


def cmd_prepare(args):
    from dualbench.common.data.prepare import prepare
    for line in prepare(args.name, args.source, args.mirror, progress=not args.no_progress):
        print(line)


def cmd_verify(args):
    from dualbench.common.data.prepare import verify
    for line in verify(args.name, args.path, progress=not args.no_progress):
        print(line)
    print("OK")


def cmd_synth(args):
    from dualbench.common.data.catalog import get_info
    from dualbench.common.data.synth import write_synthetic
    info = get_info(args.name)
    for flag, value in (("--train", args.train), ("--test", args.test)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    where = write_synthetic(args.name, args.out, args.train, args.test, args.seed)
    real = info.stand_in or info.name
    print(f"wrote synthetic {info.format} files ({info.num_classes} classes, images "
          f"{'x'.join(map(str, info.shape))}) to {where}")
    print(f"use them with: dualbench run --task TASK --dataset {real} --data-path {args.out}")


def digest_batches(pairs):
    """sha256 over (dtype, shape, bytes) of every yielded (images, labels) pair, in order."""
    h = hashlib.sha256()
    n_batches = n_samples = 0
    for xb, yb in pairs:
        for a in (xb, yb):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        n_batches += 1
        n_samples += len(yb)
    return h.hexdigest(), n_batches, n_samples


def _splits_and_batches(spec):
    from dualbench.common.data.augment import batch_transform
    from dualbench.common.data.sources import load_dataset
    from dualbench.common.data.split import epoch_batches, prepare_splits
    from dualbench.common.tasks import get_task, with_overrides
    task = with_overrides(get_task(spec["task"]), augment=spec.get("augment"))
    dataset = load_dataset(spec["dataset"], spec["data_path"], progress=False)
    splits = prepare_splits(dataset, task, spec["limit_train"])
    batches = epoch_batches(len(splits.train_y), task.protocol.batch_size, spec["seed"], spec["epoch"],
                            task.protocol.drop_last)
    # the task's training augmentation too (numpy, seeded per batch): hash what training consumes
    transform = batch_transform(task.protocol.augment, spec["seed"], spec["epoch"])
    return dataset, splits, batches, transform


def batch_hash_worker(spec):
    """In a backend's own process: hash what its native loader yields; time a plain pass too."""
    from dualbench import backends
    backend = backends.load(spec["backend"])
    dev, info = backend.device.configure(spec["threads"], "cpu")
    _, splits, batches, transform = _splits_and_batches(spec)

    def loader():
        return backend.data.make_loader(splits.train_x, splits.train_y, batches, dev, transform)

    start = time.perf_counter()
    for _ in loader():   # timing pass: the loader alone, as the training loop consumes it
        pass
    seconds = time.perf_counter() - start
    digest, n_batches, n_samples = digest_batches((xb.numpy(), yb.numpy()) for xb, yb in loader())
    return {"backend": spec["backend"], "version": info["framework_version"], "sha256": digest,
            "batches": n_batches, "samples": n_samples, "loader_ms_per_batch": 1000 * seconds / max(n_batches, 1)}


def _run_worker(spec):
    proc = subprocess.run([sys.executable, "-m", "dualbench.data_cmd", "--batch-hash-worker", json.dumps(spec)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise UserError(f"batch-hash in {spec['backend']}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_batch_hash(args):
    from dualbench import backends
    from dualbench.common.data.split import order_hash
    from dualbench.common.tasks import get_task
    task = get_task(args.task)
    names = [backends.require(n) for n in backends.parse_backends(args.backend)]
    dataset_name = args.dataset or task.data.dataset
    from dualbench.common.data.catalog import get_info
    get_info(dataset_name)
    spec = {"task": task.name, "dataset": dataset_name, "data_path": str(args.data_path) if args.data_path else None,
            "limit_train": args.limit_train, "seed": args.seed, "epoch": args.epoch, "threads": args.threads,
            "augment": args.augment}
    dataset, splits, batches, transform = _splits_and_batches(spec)
    reference = digest_batches((splits.train_x[b] if transform is None else transform(splits.train_x[b], i),
                                splits.train_y[b]) for i, b in enumerate(batches))
    print(f"task {task.name}, dataset {dataset.name} (sha256 {dataset.sha256[:16]}), seed {args.seed}, "
          f"epoch {args.epoch}: {reference[1]} batches of {task.protocol.batch_size}, {reference[2]} samples, "
          f"order {order_hash(batches)}")
    results = [_run_worker({**spec, "backend": n}) for n in names]
    print(f"{'source':<20} {'batches':>7} {'samples':>7}  {'sha256':<64}  loader ms/batch")
    print(f"{'common (numpy)':<20} {reference[1]:>7} {reference[2]:>7}  {reference[0]}  -")
    for r in results:
        print(f"{r['backend'] + ' ' + r['version']:<20} {r['batches']:>7} {r['samples']:>7}  {r['sha256']}  "
              f"{r['loader_ms_per_batch']:.3f}")
    differ = [r["backend"] for r in results if r["sha256"] != reference[0]]
    if differ:
        raise UserError(f"batches differ: {', '.join(differ)} did not yield common's arrays")
    print(f"identical: {' and '.join(names)} yield exactly common's {reference[1]} batches")


def register(sub):
    p = sub.add_parser("data", help="datasets: list, prepare (download / copy), verify, synth, batch-hash")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda a: p.print_help())

    q = data.add_parser("list", help="every dataset: present or missing, where, size, sha256, tasks using it")
    q.set_defaults(func=cmd_list)

    q = data.add_parser("prepare", help="download (md5-verified, resumable) or copy a dataset into the cache")
    q.add_argument("name")
    q.add_argument("--from", dest="source", type=Path,
                   help="a local copy: folder with the files, mnist.json.gz, or cifar-10-python.tar.gz")
    q.add_argument("--mirror", help="base URL to download from instead of the official locations")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=cmd_prepare)

    q = data.add_parser("verify", help="check recorded sha256s, published md5s, and read every file")
    q.add_argument("name")
    q.add_argument("--path", type=Path, help="check files here instead of the cache / offline locations")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=cmd_verify)

    q = data.add_parser("synth", help="write a small synthetic dataset in NAME's real on-disk format")
    q.add_argument("name", help="a dataset (e.g. cifar10, food11, mnist-json) or its synthetic- twin")
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--train", type=int, help="training images (default: a few hundred to 2000)")
    q.add_argument("--test", type=int, help="test (and validation) images")
    q.add_argument("--seed", type=int, default=1234)
    q.set_defaults(func=cmd_synth)

    q = data.add_parser("batch-hash", help="hash the batches each backend's native loader yields (must match)")
    q.add_argument("--task", required=True)
    q.add_argument("--dataset", help="default: the task's")
    q.add_argument("--data-path", type=Path)
    q.add_argument("--backend", "--backends", default="torch,paddle")
    q.add_argument("--limit-train", type=int)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--epoch", type=int, default=1)
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--augment", choices=AUGMENTATIONS, help="override the task's training augmentation")
    q.set_defaults(func=cmd_batch_hash)


def _worker_main(argv):
    try:
        print(json.dumps(batch_hash_worker(json.loads(argv[0]))))
    except UserError as e:
        print(f"dualbench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--batch-hash-worker"]:
    sys.exit(_worker_main(sys.argv[2:]))
