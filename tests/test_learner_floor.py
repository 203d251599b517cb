"""The learner-floor benchmark's product recorder (benchmarks/learner_floor.py): it must see
every matrix product of a step, the backward's included, and count their FLOPs right, or the
floor it reports is not the step's."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learner_floor import ProductRecorder, product_flops, replay  # noqa: E402


def test_the_recorder_counts_forward_and_backward_products_by_hand():
    linear = torch.nn.Linear(3, 5)  # bias: addmm
    x = torch.randn(4, 3, requires_grad=True)
    with ProductRecorder() as recorder:
        torch.randn(4, 3) @ torch.randn(3, 5)  # mm: 2*4*3*5 = 120
        torch.bmm(torch.randn(2, 4, 3), torch.randn(2, 3, 5))  # bmm: 2*2*4*3*5 = 240
        linear(x).sum().backward()  # addmm 120; backward: input 4x5 @ 5x3 and weight 5x4 @ 4x3
    names = sorted(name for name, _ in recorder.calls)
    assert names == ["addmm", "bmm", "mm", "mm", "mm"]
    assert product_flops(recorder.calls) == 120 + 240 + 120 + 120 + 120
    replay(recorder.calls)()  # the replay runs every recorded shape
