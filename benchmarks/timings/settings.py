"""The settings a benchmark cell runs under, and the candidates `dualbench bench` tunes each framework over.

A setting is (threads, mode, precision, knobs). Knobs are framework switches that change speed but not
the model: `onednn` on CPU (torch.backends.mkldnn.enabled, default on; paddle's FLAGS_use_mkldnn,
default off), `cudnn_benchmark` and `tf32` on GPU. Each backend's speed.apply_settings sets them; a knob
left out of a cell means the framework's own default. No torch, no paddle here: the driver plans cells
without importing either framework.

Why these: on this suite's 2-core CPU, paddle's LeNet trains at 3,167 samples/s with 1 math thread and
2,625 with 2 (torch is fastest with 2), so one shared thread count favours one framework; oneDNN and
compilation are the other switches a user would try. On GPU the switches that matter are mixed
precision (the suite's precisions), cuDNN autotuning and TF32 matmuls.
"""
from dualbench.common.errors import UserError

# Knobs tuned per device and backend. paddle exposes no runtime TF32 switch for its dynamic graph, so
# TF32 is tuned for torch only (paddle runs at its default).
KNOBS = {
    "cpu": {"torch": ("onednn",), "paddle": ("onednn",)},
    "gpu": {"torch": ("cudnn_benchmark", "tf32"), "paddle": ("cudnn_benchmark",)},
}
BEST = "each at its best"   # what the pairs of the best stage share


def knobs_text(knobs):
    """{'onednn': True} -> 'onednn=on'; {} -> '' (the framework's defaults). Sorted, so it is a key."""
    return ",".join(f"{k}={'on' if v else 'off'}" for k, v in sorted((knobs or {}).items()))


def parse_knobs(text):
    """'onednn=on,tf32=off' -> {'onednn': True, 'tf32': False}; '' or NaN -> {}."""
    if not isinstance(text, str) or not text.strip():
        return {}
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if value not in ("on", "off"):
            raise UserError(f"knob setting '{part}': expected NAME=on or NAME=off")
        out[name.strip()] = value == "on"
    return out


def setting_label(threads, mode, precision, knobs):
    """One readable label of a setting, e.g. 'eager fp32, 1 thread, onednn=on'."""
    parts = [f"{mode} {precision}", f"{threads} thread{'s' if int(threads) != 1 else ''}"]
    if knobs:
        parts.append(knobs if isinstance(knobs, str) else knobs_text(knobs))
    return ", ".join(parts)


def pairing_label(stage, threads, mode, precision, knobs):
    """What the two sides of a pair share, as the report names a configuration: the setting ('eager fp32,
    2 threads, default switches'), 'each at its best' in the best stage, 'A/A, <setting>' for A/A pairs."""
    if stage == "best":
        return BEST
    setting = setting_label(threads, mode, precision, knobs or "default switches")
    return f"A/A, {setting}" if stage == "aa" else setting


def thread_candidates(cores):
    """1, 2, 4, ... up to the cores, and the cores themselves: the thread counts worth trying."""
    out, n = [], 1
    while n < cores:
        out.append(n)
        n *= 2
    return out + [cores]


def candidates(device, backend, cores, modes=("eager",), precisions=("fp32",)):
    """Every setting the tuning stage tries for one backend: threads x modes x precisions x each knob on
    and off. On GPU the thread count only feeds the host side, so it stays at the cores."""
    threads = thread_candidates(cores) if device == "cpu" else [cores]
    knob_sets = [{}]
    for name in KNOBS.get(device, {}).get(backend, ()):
        knob_sets = [{**ks, name: value} for ks in knob_sets for value in (False, True)]
    return [{"threads": t, "mode": m, "precision": p, "knobs": ks}
            for t in threads for m in modes for p in precisions for ks in knob_sets]


def knob_env(backend, knobs):
    """Environment a worker starts with for these knobs: paddle reads FLAGS_* when it is imported, so its
    oneDNN switch is set there as well as at run time (torch's switches are plain attributes)."""
    if backend == "paddle" and "onednn" in (knobs or {}):
        return {"FLAGS_use_mkldnn": "1" if knobs["onednn"] else "0"}
    return {}
