"""compare_models(): the model-pair parity check as a Python function, for a user's own tests.

    from dualbench import compare_models

    def test_port():
        result = compare_models(MyTorchNet(), MyPaddleNet(), np.random.rand(2, 3, 64, 64).astype("float32"))
        assert result.passed, result.summary

Both models are copied before anything is changed, so the caller's models stay as they were.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dualbench.common.errors import UserError
from dualbench.parity.checks import check_pair
from dualbench.parity.mapping import Mapping, write_mapping
from dualbench.parity.output import as_frame, check_table, summarise, terminal_report, write_outputs
from dualbench.parity.pair import ParityConfig, load_sides, model_pair, structure_error
from dualbench.parity.rows import FAILED


@dataclass
class ParityResult:
    result: str              # pass | FAIL | inconclusive (a vacuous comparison)
    rows: object             # pandas DataFrame, one row per comparison (parity.csv's columns)
    checks: object           # the worst row per check
    mapping: Mapping
    summary: str             # the terminal report, as text
    timings: dict = None     # seconds per stage
    notes: list = None       # what the rows do not say (a check skipped, and why)
    _rows: list = None

    @property
    def passed(self):
        return self.result == "pass"

    @property
    def first_failure(self) -> Optional[dict]:
        """The first row out of tolerance that is a cause itself (as the summary names it): not a row that
        follows from another (a Transformer stack recorded before its part)."""
        failed = [r for r in self._rows if r["status"] in FAILED]
        return next((r for r in failed if not str(r["cause"] or "").startswith("follows from")),
                    failed[0] if failed else None)

    def __bool__(self):
        return self.passed

    def __str__(self):
        return self.summary

    def write(self, out_dir):
        """parity.csv, parity.md and mapping.json into out_dir."""
        from dualbench.parity.run import mapping_lines, timing_line
        write_outputs(self._rows, out_dir, {self.rows.task.iloc[0]: mapping_lines(self.mapping) + self.notes +
                                            [timing_line(self.timings)]})
        write_mapping(self.mapping, Path(out_dir) / "mapping.json")


def _factory(model, side):
    inspect = side.inspect
    if inspect.is_model(model):
        return lambda: inspect.copy_model(model)
    if callable(model):
        def build():
            built = model()
            if not inspect.is_model(built):
                raise UserError(f"the {side.name} builder returned a {type(built).__name__}, not a model")
            return built
        return build
    raise UserError(f"expected a {side.name} model or a function that builds one, got {type(model).__name__}")


def _label(model):
    """The pair's name in the report: the builder's or the model class's name."""
    name = getattr(model, "__name__", None) or type(model).__name__
    return "model pair" if name.startswith("<") else name


def compare_models(torch_model, paddle_model, inputs, *, labels=None, loss=None, classes=None, train_steps=3,
                   optimizer="sgd", lr=None, mapping=None, weights="torch", atol=None, rtol=None, seed=0,
                   float64="auto", name=None, output=0):
    """Check that a torch model and a paddle model compute the same thing; returns a ParityResult.

    torch_model / paddle_model: a model, or a zero-argument function that builds one.
    inputs: a numpy batch, a list of arrays for several positional inputs, or {name: array} passed to
    forward() by parameter name (token ids keep their integer dtype; a mapping file's "inputs" renames a
    name per side).
    loss: 'ce' (class scores on axis 1; random labels in [0, classes)), 'ce_last' (classes on the last axis:
    [N, T, V] logits, [N, T] labels), 'mse' (random targets shaped like the output) or 'sum'; default ce
    for [N, C] outputs, ce_last for [N, T, V], else mse. labels: your own, instead. output: which tensor of
    a tuple/dict output the loss is on (flattened order).
    train_steps / optimizer ('sgd' | 'momentum' | 'adam') / lr: the training steps compared.
    mapping: a mapping file (or a Mapping) instead of automatic matching.
    weights: start both from torch's weights, paddle's, or the same 'random' canonical weights.
    float64: repeat the gradient and training checks in float64: True, False, or 'auto' (when a
    float32 check fails, to tell rounding noise from a real difference).
    """
    if weights not in ("torch", "paddle", "random"):
        raise UserError(f"weights must be 'torch', 'paddle' or 'random', got {weights!r}")
    if optimizer not in ("sgd", "momentum", "adam"):
        raise UserError(f"optimizer must be 'sgd', 'momentum' or 'adam', got {optimizer!r}")
    sides = load_sides()
    factories = {"torch": _factory(torch_model, sides["torch"]), "paddle": _factory(paddle_model, sides["paddle"])}
    sides["torch"].build_model = lambda spec: factories["torch"]()
    sides["paddle"].build_model = lambda spec: factories["paddle"]()
    config = ParityConfig(steps=train_steps, seed=seed, optimizer=optimizer, lr=lr, atol=atol, rtol=rtol,
                          float64=float64, weights=weights, output_leaf=output)
    if isinstance(inputs, dict):
        inputs = {key: np.asarray(value) for key, value in inputs.items()}
    else:
        inputs = [np.asarray(a) for a in inputs] if isinstance(inputs, (list, tuple)) else np.asarray(inputs)
    given = mapping if isinstance(mapping, Mapping) else None
    pair = model_pair(factories, sides, config, inputs, loss=loss, classes=classes, labels=labels,
                      mapping_file=None if given is not None or mapping is None else mapping,
                      name=name or _label(torch_model), mapping=given)
    problem = structure_error(pair.mapping)
    if problem:
        raise problem
    rows = check_pair(pair, sides, config)
    summary = summarise(rows)
    frame = as_frame(rows)
    worst = check_table(frame)
    lines = []
    terminal_report(summary, worst, lines.append)
    lines += [f"note: {note}" for note in pair.notes or []]
    return ParityResult(summary.result.iloc[0], frame, worst, pair.mapping, "\n".join(lines), pair.timings,
                        pair.notes or [], rows)
