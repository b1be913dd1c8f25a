"""A module call recorded by the backends replays as it was made: tensors nested in the arguments
(lstm(x, (h, c)), hx=(h, c)) keep their place, so a module run alone on the captured call gives its
recorded output. Both backends, on the frameworks' own LSTM."""
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("paddle")

import paddle  # noqa: E402
import torch  # noqa: E402

from dualbench import backends  # noqa: E402
from dualbench.common.nested import fill_layout, leaf_layout  # noqa: E402

N, L, E, H = 2, 5, 4, 3


class TorchStates(torch.nn.Module):
    def __init__(self, keyword):
        super().__init__()
        self.lstm, self.keyword = torch.nn.LSTM(E, H, batch_first=True), keyword

    def forward(self, x, h, c):
        return self.lstm(x, hx=(h, c)) if self.keyword else self.lstm(x, (h, c))


class PaddleStates(paddle.nn.Layer):
    def __init__(self, keyword):
        super().__init__()
        self.lstm, self.keyword = paddle.nn.LSTM(E, H), keyword

    def forward(self, x, h, c):
        return self.lstm(x, initial_states=(h, c)) if self.keyword else self.lstm(x, (h, c))


def inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in ((N, L, E), (1, N, H), (1, N, H))]


@pytest.mark.parametrize("keyword", [False, True], ids=["positional", "keyword"])
@pytest.mark.parametrize("side,build", [("torch", TorchStates), ("paddle", PaddleStates)])
def test_a_call_with_nested_states_replays_to_its_recorded_output(side, build, keyword):
    inspect = backends.load(side, "inspect")
    model = build(keyword)
    calls, outputs, error = inspect.record_calls(model, inputs(), False, ["lstm"])
    assert error is None and len(calls) == 1
    call = calls[0]
    replayed = inspect.call_module(model, "lstm", call["inputs"], False, call["kwargs"], call["layout"])
    # the states matter: without them (zeros) the output is another one
    assert not np.allclose(inspect.call_module(model, "lstm", call["inputs"][:1], False)[0], call["outputs"][0])
    for got, recorded in zip(replayed, call["outputs"], strict=True):
        np.testing.assert_allclose(got, recorded, rtol=1e-6, atol=1e-7)


def test_a_layout_refuses_inputs_that_do_not_fit_it():
    leaves, layout = leaf_layout(("x", ("h", "c"), None), lambda v: isinstance(v, str))
    assert leaves == ["x", "h", "c"] and fill_layout(layout, [1, 2, 3]) == (1, (2, 3), None)
    with pytest.raises(ValueError, match="2 values for 3 places"):
        fill_layout(layout, [1, 2])
