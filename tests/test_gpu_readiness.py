"""What the first GPU run would trip over, checked on the CPU (issue: the GPU pipelines ready for
their first GPU)."""
from __future__ import annotations

import torch

import nasnetzoo


def test_a_changing_drop_path_probability_compiles_once():
    """DropPath reads its probability from a buffer under torch.compile: a schedule that changes it
    every epoch (DARTS's linear ramp) must not recompile, which a Python float, guarded on its
    value, did (one compile per epoch until dynamo's recompile limit, then eager)."""
    torch.manual_seed(0)
    model = nasnetzoo.load("darts_v2_cifar", C=4, layers=3, num_classes=10).train()
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend, dynamic=False)
    x = torch.randn(2, 3, 16, 16)
    for epoch_probability in (0.1, 0.2, 0.3):
        model.drop_path_prob = epoch_probability
        compiled(x)
    torch._dynamo.reset()
    assert len(graphs) == 1


def test_drop_path_keeps_its_eager_random_stream_and_state_dict():
    """The buffer is not persistent (weights files are unchanged) and eager mode draws as before:
    the same mask as ``bernoulli_`` with the float probability."""
    from nasnetzoo.models.layers import DropPath

    layer = DropPath(scale=0.5).train()
    layer.p = 0.4
    assert list(layer.state_dict()) == []
    x = torch.ones(64, 1, 1, 1)
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    keep = 1.0 - 0.4 * 0.5
    expected = x * torch.empty_like(x).bernoulli_(keep) / keep
    assert torch.equal(out, expected)
    assert layer.prob.item() == torch.tensor(0.4).item() and layer.active
