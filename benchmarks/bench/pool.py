"""The worker pool: per group of cells, one bench worker process (bench.worker) per backend, thread count and import-time
knobs, all started (and their frameworks imported) before the first cell is timed; cells sent one at a
time, rows appended as each cell finishes; a crashed worker is a failed row and is restarted for the next."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from dualbench.timings.table import BENCH_COLUMNS, problem_rows

class Worker:
    """A bench.worker child process for one backend: cells in on stdin, JSON results back on a pipe."""

    def __init__(self, backend, threads, extra_env=None):
        from dualbench.worker import PARENT_ENV
        from dualbench.common.results import thread_env
        read_fd, write_fd = os.pipe()
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dualbench.bench.worker", backend, str(write_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(write_fd,),
            env={**thread_env(threads), **(extra_env or {}), PARENT_ENV: str(os.getpid())},
            text=True, start_new_session=True)   # Ctrl-C reaches only the parent, which stops the workers itself
        os.close(write_fd)
        self.results = os.fdopen(read_fd, "r")
        self.backend = backend
        self.started = False

    def wait_ready(self):
        """Block until the worker has imported its framework (a dead worker: its first cell reports it)."""
        if not self.started:
            self.started = True
            self.results.readline()

    def run(self, cell):
        """Send a cell, wait for its reply; when the worker died, a failed reply naming how (its log
        tail is printed)."""
        self.wait_ready()
        try:
            self.proc.stdin.write(json.dumps(cell) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.results.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            tail = self.log.read().strip().splitlines()[-5:]
            print(f"dualbench bench: {self.backend} worker died (exit code {self.proc.returncode}):\n  "
                  + "\n  ".join(tail), file=sys.stderr)
            return {"error": death_line(self.proc.returncode, tail, cell), "died": True}
        return json.loads(line)

    def pause(self):
        """SIGSTOP: a worker that is not timing anything cannot run at all, so its idle math threads (paddle's
        OpenMP spins 200 ms after its last cell) and its reader thread never share the cores with the cell
        being timed in another worker."""
        self._signal(signal.SIGSTOP)

    def resume(self):
        self._signal(signal.SIGCONT)

    def _signal(self, number):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, number)
            except ProcessLookupError:
                pass

    def close(self, kill=False):
        self.resume()   # a stopped worker would never read the end of its input
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                try:
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.results.close()
        self.log.close()


def death_line(returncode, log_tail, cell):
    """One line for a worker that died without replying: the signal or exit code, and its last log line."""
    last = next((line.strip() for line in reversed(log_tail) if line.strip()), "")
    if returncode is not None and returncode < 0:
        how = f"worker killed by signal {-returncode}"
        if -returncode == 9:   # SIGKILL: most often the kernel's out-of-memory killer
            how += (f" (possibly out of memory at batch size {cell.get('batch_size')}; "
                    "try a smaller --batch-size)")
    else:
        how = f"worker exited with code {returncode}"
    return how + (f": {last}" if last else "")


def worker_key(cell):
    """The worker a cell runs in: its backend, thread count, the environment its knobs need at import, and its
    A/A side ('' for other cells), so that the two sides of an A/A pair run in two processes of their own."""
    from dualbench.timings.settings import knob_env, parse_knobs
    env = knob_env(cell["backend"], parse_knobs(cell.get("knobs")))
    return cell["backend"], int(cell["threads"]), tuple(sorted(env.items())), cell.get("aa_side") or ""


def start_worker(key):
    backend, threads, env = key[:3]
    return Worker(backend, threads, dict(env))


def run_alone(workers, key, cell):
    """Run a cell in workers[key] with every other worker of the group stopped (see Worker.pause)."""
    for other, worker in workers.items():
        if other != key:
            worker.pause()
    workers[key].resume()
    return workers[key].run(cell)


def cell_seconds(durations, cell):
    """Expected seconds of a cell: the median of the same task, backend and kind in this invocation."""
    same = durations.get((cell["task"], cell["backend"], cell["kind"]))
    if same:
        return float(np.median(same))
    everything = [v for values in durations.values() for v in values]
    return float(np.median(everything)) if everything else 2.0


WORKER_START_SECONDS = 3.0   # importing a framework in a new worker, added to a group's estimate


def append_reply(csv_path, cell, reply, seconds, durations, problems, bar, node=None, where=""):
    """Append a finished cell's rows to bench.csv, or its failed / diverged rows (noted in `problems` and on the
    terminal); a measured cell's seconds go into `durations` for the time estimates. node: the columns naming
    the node that ran it (Ray), `where` the words saying so."""
    from dualbench.common.results import append_rows
    if "error" in reply:
        status = "diverged" if reply.get("diverged") else "failed"
        problems.append((cell, status, reply["error"]))
        append_rows(csv_path, [{**row, **(node or {})} for row in problem_rows(cell, status, reply["error"])],
                    BENCH_COLUMNS)
        bar.write(f"dualbench bench: {cell['task']} {cell['backend']} {cell['kind']} repeat {cell['repeat']} "
                  f"{status}{where}: {reply['error']}")
    else:
        append_rows(csv_path, reply["rows"], BENCH_COLUMNS)
        durations.setdefault((cell["task"], cell["backend"], cell["kind"]), []).append(seconds)
    bar.update(1)


def execute(groups, csv_path, progress=True, durations=None, deadline=None, desc="bench"):
    """Run every pending cell on this machine; append its rows atomically as soon as it finishes, a failed or
    diverged cell's too. Returns ([(cell, status, error)] of the cells that failed or diverged, groups not
    started). bench.on_ray.execute_on_ray keeps the same contract on a Ray cluster.

    durations: {(task, backend, kind): [seconds]} filled as cells finish; deadline: a perf_counter time
    no group may be expected to run past (estimated from `durations`), the rest is returned unstarted."""
    from tqdm import tqdm

    durations = {} if durations is None else durations
    total = sum(len(g["cells"]) for g in groups)
    bar = tqdm(total=total, unit="cell", file=sys.stderr, disable=not progress, desc=desc)
    problems = []
    for index, group in enumerate(groups):
        if deadline is not None:
            expected = WORKER_START_SECONDS + sum(cell_seconds(durations, c) for c in group["cells"])
            if time.perf_counter() + expected > deadline:
                bar.close()
                return problems, groups[index:]
        workers, interrupted = {}, True
        try:
            # Start the group's workers together and wait until both frameworks are imported: the imports
            # overlap (measured: 2.0 s for both instead of 1.9 + 1.3 s one after the other) and none runs while a
            # cell is timed.
            for key in dict.fromkeys(worker_key(c) for c in group["cells"]):
                workers[key] = start_worker(key)
            for worker in workers.values():
                worker.wait_ready()
            for cell in group["cells"]:
                name, key = cell["backend"], worker_key(cell)
                bar.set_postfix_str(f"{cell.get('stage', '')} r{cell['repeat']} {cell['task']} {name} {cell['kind']} "
                                    f"t{cell['threads']} {cell.get('knobs') or ''} b{cell['batch_size']}", refresh=False)
                started = time.perf_counter()
                if key not in workers:
                    workers[key] = start_worker(key)
                reply = run_alone(workers, key, cell)
                if reply.get("died"):      # a crashed worker: restart it for the next cell
                    workers.pop(key).close(kill=True)
                if reply.get("user") and cell.get("pair"):   # a model pair's SPEC does not load: nothing to time
                    from dualbench.common.errors import UserError
                    raise UserError(reply["error"])
                append_reply(csv_path, cell, reply, time.perf_counter() - started, durations, problems, bar)
            interrupted = False
        finally:   # Ctrl-C / SIGTERM: kill the workers, so that the cell in flight is never written
            for worker in workers.values():
                worker.close(kill=interrupted)
    bar.close()
    return problems, []


