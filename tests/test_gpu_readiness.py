"""What the first GPU run would trip over, checked on the CPU (issue: the GPU pipelines ready for
their first GPU)."""
from __future__ import annotations

import pytest
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


# ---------------------------------------------------------------- DDP search: bucketed gradient averaging
def test_buckets_pack_consecutive_tensors_of_one_dtype_up_to_the_limit():
    from nasnetzoo.runs.distributed import buckets

    f32 = [torch.zeros(10) for _ in range(5)]            # 40 bytes each
    big, f64 = torch.zeros(100), torch.zeros(3, dtype=torch.float64)
    groups = list(buckets([*f32[:3], big, *f32[3:], f64], limit=100))
    assert [len(g) for g in groups] == [2, 1, 1, 2, 1]   # 80 B, then 40 + 400 > 100, big alone, 80 B, a new dtype
    assert groups[2] == [big] and groups[-1] == [f64]
    assert [t for g in groups for t in g] == [*f32[:3], big, *f32[3:], f64]   # order kept


def test_search_gradients_are_averaged_in_a_few_buckets_not_one_message_per_tensor(monkeypatch):
    """A fake two-process reduction (the other rank's gradient is a function of this one's, so the
    expected mean is known) over a supernet's gradients: a few calls, the same averages."""
    import torch.distributed as dist

    from nasnetzoo.search.strategies.base import SearchStrategy
    from nasnetzoo.search.supernet import SearchNetwork

    calls = []

    def fake_all_reduce(t, *args, **kwargs):
        calls.append(t.numel())
        t.add_(t.square())    # the sum with a rank whose gradient is g**2, elementwise

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    torch.manual_seed(0)
    network = SearchNetwork(C=4, layers=3, num_classes=3, edge_norm=False)
    network(torch.randn(2, 3, 8, 8)).square().sum().backward()
    grads = [p.grad for p in network.weight_parameters() if p.grad is not None]
    expected = [(g + g.square()) / 2 for g in grads]
    SearchStrategy.all_reduce_mean(grads)
    assert len(grads) > 100 and len(calls) == 1 and calls[0] == sum(g.numel() for g in grads)
    for got, want in zip(grads, expected):
        assert torch.equal(got, want)


def _bucket_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from nasnetzoo.runs.distributed import all_reduce_mean

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)   # each rank its own gradients
        grads = [torch.randn(s) for s in [(7,), (3, 4), (2, 3, 5, 5), (1,)]]
        grads.append(torch.randn(2, 2, 3, 3).to(memory_format=torch.channels_last))   # shares a bucket with (1,)
        grads += [torch.randn(s) for s in [(64, 16), (5, 2, 3, 3)]]
        per_tensor = [g.clone() for g in grads]
        for t in per_tensor:     # the old way: one all_reduce per tensor
            dist.all_reduce(t)
            t.div_(world)
        all_reduce_mean(grads, limit=400)    # several buckets of a few tensors each
        torch.save({"bucketed": grads, "per_tensor": per_tensor}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_bucketed_averages_equal_per_tensor_ones_on_two_gloo_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_bucket_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for a, b, c in zip(r0["bucketed"], r0["per_tensor"], r1["bucketed"]):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert r0["bucketed"][4].is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- DDP search: per-rank augmentation
def test_each_rank_draws_its_own_augmentation_on_the_same_architecture():
    """The loop a rank builds (no process group needed): the supernet and GDAS's sampler are the same
    on ranks 0 and 1 and on one process, the global RNG that crops and flips draw from is not; rank 0
    keeps one process's stream."""
    from nasnetzoo.runs.distributed import DistInfo
    from nasnetzoo.search import runner

    recipe = _tiny_search_recipe("strategy=gdas", "partial_k=1", "edge_norm=false", "max_steps_per_epoch=1")
    built = {}
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        loop = runner._build(DistInfo(rank=rank, world=world), recipe)
        built[rank, world] = (loop.network.state_dict(), loop.strategy.generator.get_state(), torch.get_rng_state())
    one, first, second = built[0, 1], built[0, 2], built[1, 2]
    for other in (first, second):
        assert all(torch.equal(one[0][k], other[0][k]) for k in one[0])   # the architecture and weights
        assert torch.equal(one[1], other[1])                               # the sampler's stream
    assert torch.equal(one[2], first[2]) and not torch.equal(first[2], second[2])
    torch.manual_seed(recipe.seed)
    assert not torch.equal(one[2], torch.get_rng_state())   # not reseeded on rank 0: the build's draws count


# ---------------------------------------------------------------- compile: the compiled search step
def test_the_compile_key_is_refused_on_the_fused_backend_and_on_strategies_without_a_compiled_step():
    from nasnetzoo.recipe_file import RecipeError

    for extra, words in ((("backend=fused",), "set backend: reference"),
                         (("memory=checkpoint",), "set memory: default"),
                         (("strategy=parsec", "edge_norm=false", "partial_k=1"), "strategy 'parsec' has no compiled")):
        with pytest.raises(RecipeError) as err:
            _tiny_search_recipe("compile=true", *extra)
        assert words in str(err.value) and "\n" not in str(err.value)
    assert _tiny_search_recipe("compile=true", "strategy=darts", "edge_norm=false", "second_order=true").compile


def _compiled_search(tmp_path, name: str, *extra: str, **kwargs):
    from torch._dynamo.utils import counters

    from nasnetzoo.search import runner

    torch._dynamo.reset()
    counters.clear()
    recipe = _tiny_search_recipe("steps=1", "warmup_epochs=0", *extra)
    result = runner.search(recipe, out=tmp_path / name, **kwargs)
    state = torch.load(tmp_path / name / runner.CHECKPOINT, weights_only=False)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    return result, state, graphs


def test_a_compiled_search_step_runs_the_captured_supernet_and_matches_eager(monkeypatch):
    """compile: true on the auto backend builds the reference supernet, and a search step (the
    architecture step, then the weights') runs dynamo's capture of it (here handed to dynamo's
    "eager" backend, which runs the captured graph as it is: inductor's code generation, with its
    backward through AOTAutograd, takes minutes here, so whole inductor searches and their resume
    are in the slow tier): one graph, the same alphas and weights as an eager step, and the
    module's own state (what checkpoints hold)."""
    from torch._dynamo.utils import counters

    from nasnetzoo.runs.distributed import DistInfo
    from nasnetzoo.search import compiled, runner

    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "eager")
    loops = {}
    for name, extra in (("eager", "backend=reference"), ("compiled", "compile=true")):
        torch._dynamo.reset()
        counters.clear()
        loop = runner._build(DistInfo(), _tiny_search_recipe("steps=1", "warmup_epochs=0", extra))
        train_batch, arch_batch = next(iter(loop.data.weights)), next(iter(loop.data.arch))
        loop.strategy.step(train_batch, arch_batch, loop.optimizer)
        loops[name] = (loop, counters["stats"]["unique_graphs"], loop.network.backend)
    torch._dynamo.reset()
    (eager, eager_graphs, eager_backend), (comp, graphs, backend) = loops["eager"], loops["compiled"]
    assert (eager_graphs, graphs, eager_backend, backend) == (0, 1, "reference", "reference")
    eager_state, comp_state = eager.network.state_dict(), comp.network.state_dict()
    assert list(comp_state) == list(eager_state)
    for key, value in eager_state.items():
        assert torch.allclose(comp_state[key].float(), value.float(), atol=1e-6), key
    assert not torch.equal(eager_state["alphas_normal"], eager.network.alphas_normal.new_zeros(()).expand_as(
        eager_state["alphas_normal"])) and eager.strategy.arch_optimizer.state   # an architecture step was taken


@pytest.mark.slow
def test_an_inductor_compiled_search_matches_eager_and_resumes_exactly(tmp_path):
    """The real compile (inductor, minutes on a loaded 2-core machine): alphas within float tolerance of
    eager, the same genotype, and a compiled run stopped after its first epoch and resumed ends
    bitwise where an uninterrupted compiled run ends."""
    eager, eager_state, _ = _compiled_search(tmp_path, "eager", "max_steps_per_epoch=2", "epochs=2",
                                             "backend=reference")
    whole, whole_state, graphs = _compiled_search(tmp_path, "whole", "max_steps_per_epoch=2", "epochs=2",
                                                  "compile=true")
    assert graphs >= 1 and whole.genotype.to_string() == eager.genotype.to_string()
    for key in ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"):
        assert torch.allclose(whole_state["model"][key], eager_state["model"][key], atol=1e-5), key
    _compiled_search(tmp_path, "cut", "max_steps_per_epoch=2", "epochs=2", "compile=true",
                     on_epoch_end=lambda epoch: True)
    from nasnetzoo.search import runner

    torch._dynamo.reset()
    runner.search(runner.prepare_resume(tmp_path / "cut"), resume=tmp_path / "cut")
    resumed = torch.load(tmp_path / "cut" / runner.CHECKPOINT, weights_only=False)
    assert resumed["epoch"] == 1
    for key, value in whole_state["model"].items():
        assert torch.equal(resumed["model"][key], value), key


# ---------------------------------------------------------------- samplers on the device
def test_parsec_reads_each_sample_back_with_one_copy_per_cell_type(monkeypatch):
    """A sample's categories come to the host in one copy per cell type (reading them element by
    element waited on a GPU 32 times per sample)."""
    from nasnetzoo.search.strategies.parsec import PARSECStrategy
    from nasnetzoo.search.supernet import CELL_TYPES, SearchNetwork

    strategy = PARSECStrategy(SearchNetwork(C=4, layers=3, num_classes=3, edge_norm=False), num_samples=2,
                              generator=torch.Generator().manual_seed(5))
    reads = []
    for name in ("__int__", "__float__", "item", "tolist", "__index__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n),
                                                                                            _o(self, *a, **k))[1])
    choice, _ = strategy.sample()
    monkeypatch.undo()
    assert len(reads) == len(CELL_TYPES), reads
    assert all(isinstance(j, int) and isinstance(o, int) for cell in choice.values() for node in cell for j, o in node)


def test_gdas_and_snas_draw_with_a_generator_on_their_network_s_device(monkeypatch):
    """GDAS's and SNAS's Gumbel draws (``exponential_`` / ``uniform_`` with a generator) refuse a CPU
    generator for CUDA tensors, as PARSEC's ``multinomial`` does: both move theirs to the network's
    device through ``generator_on``."""
    from nasnetzoo.search.strategies import gdas, snas
    from nasnetzoo.search.supernet import SearchNetwork

    for module, cls in ((gdas, gdas.GDASStrategy), (snas, snas.SNASStrategy)):
        calls = []
        real = module.generator_on
        monkeypatch.setattr(module, "generator_on", lambda device, g, _real=real: (calls.append(device),
                                                                                   _real(device, g))[1])
        network = SearchNetwork(C=4, layers=3, num_classes=3, partial_k=1, edge_norm=False)
        strategy = cls(network, generator=torch.Generator().manual_seed(3))
        assert calls == [network.alphas_normal.device], cls
        assert strategy.generator.device == network.alphas_normal.device
        if torch.cuda.is_available():
            cls(network.cuda(), generator=torch.Generator().manual_seed(3)).sample()
