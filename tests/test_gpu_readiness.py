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


def _tiny_search_recipe(*extra: str):
    from pathlib import Path

    from nasnetzoo.search.recipe import load_search_recipe

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    return load_search_recipe(recipes / "smoke_search.yaml", ["image_size=16", "C=4", "layers=3", "batch_size=16",
                                                                "progress=false", "epochs=1", "warmup_epochs=0",
                                                                *extra])


def _host_syncs_in_one_search(monkeypatch, tmp_path, steps: int, strategy: str) -> int:
    """Device-to-host reads (float/int/item/tolist of a tensor) that nasnetzoo's own code makes
    inside the search's epoch loop.  PyTorch's own reads there are of host tensors (Adam's step
    count, the sampler's indices), which do not wait for a GPU."""
    import sys

    from nasnetzoo.search import runner

    count = {"n": 0}
    epoch = getattr(runner._search_epoch, "__wrapped__", runner._search_epoch)   # not a wrapper of an earlier call

    def counted_epoch(*args, **kwargs):
        originals = {name: getattr(torch.Tensor, name) for name in ("__float__", "__int__", "item", "tolist")}

        def counting(original):
            def read(self, *a, **k):
                caller = sys._getframe(1).f_code.co_filename
                if "nasnetzoo" in caller and "site-packages" not in caller and "tests" not in caller:
                    count["n"] += 1
                return original(self, *a, **k)
            return read

        for name, original in originals.items():
            monkeypatch.setattr(torch.Tensor, name, counting(original))
        try:
            return epoch(*args, **kwargs)
        finally:
            for name, original in originals.items():
                monkeypatch.setattr(torch.Tensor, name, original)

    counted_epoch.__wrapped__ = epoch
    monkeypatch.setattr(runner, "_search_epoch", counted_epoch)
    runner.search(_tiny_search_recipe(f"max_steps_per_epoch={steps}", f"strategy={strategy}"),
                  out=tmp_path / f"{strategy}{steps}")
    return count["n"]


def test_the_search_loop_reads_the_device_once_an_epoch_not_once_a_step(monkeypatch, tmp_path):
    """Loss and accuracy accumulate on the device: running twice the steps adds no host sync (a
    float(loss) per step stalls a GPU's queue every step). PARSEC's sampler reads its draws once
    per sample (that is what sampling on the host needs), so it is checked on DARTS."""
    assert (_host_syncs_in_one_search(monkeypatch, tmp_path, 1, "darts")
            == _host_syncs_in_one_search(monkeypatch, tmp_path, 2, "darts"))


def test_the_search_sets_up_cudnn_and_tf32_as_the_retrain_does(monkeypatch, tmp_path):
    from nasnetzoo.search import runner

    calls = []
    monkeypatch.setattr(runner, "configure_determinism", lambda deterministic, device: calls.append(
        (deterministic, device.type)))
    runner.search(_tiny_search_recipe("max_steps_per_epoch=1"), out=tmp_path / "run")
    assert calls == [(False, "cpu")]


def test_the_search_runs_in_fp32_unless_bf16_is_asked_for():
    """The papers search in fp32, and bf16 autocast changed the smoke search's genotype on the CPU."""
    from nasnetzoo.search.recipe import SearchRecipe

    assert SearchRecipe().amp == "off"
    assert _tiny_search_recipe("amp=bf16").amp == "bf16"


def test_parsec_samples_with_a_generator_on_its_network_s_device():
    """torch.multinomial refuses a CPU generator for CUDA probabilities: the strategy moves the
    generator to the network's device, seeded alike (every rank still draws the same samples)."""
    from nasnetzoo.search.strategies.parsec import PARSECStrategy, generator_on
    from nasnetzoo.search.supernet import SearchNetwork

    network = SearchNetwork(C=4, layers=3, num_classes=3, edge_norm=False)
    strategy = PARSECStrategy(network, num_samples=2, generator=torch.Generator().manual_seed(5))
    assert strategy.generator.device == network.alphas_normal.device
    assert generator_on(torch.device("cpu"), None) is None
    if torch.cuda.is_available():
        moved = generator_on(torch.device("cuda"), torch.Generator().manual_seed(5))
        assert moved.device.type == "cuda" and moved.initial_seed() == 5
        cuda_strategy = PARSECStrategy(network.cuda(), num_samples=2, generator=torch.Generator().manual_seed(5))
        cuda_strategy.sample()
