"""Search runs end to end on the embedded digits: files, resume, PARSEC warm start, DDP."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import nasnetzoo
from nasnetzoo.cli import cli
from nasnetzoo.errors import ConfigError
from nasnetzoo.genotype import Genotype
from nasnetzoo.search.recipe import SearchRecipe, load_search_recipe
from nasnetzoo.search.runner import CHECKPOINT, prepare_resume, search
from nasnetzoo.search.supernet import SearchNetwork
from nasnetzoo.train.recipe import RecipeError

REPO = Path(__file__).resolve().parents[1]
SEARCH_RECIPES = ["cifar10", "darts_cifar10", "parsec_cifar10", "pcdarts_imagenet", "smoke_search",
                  "gdas_cifar10", "snas_cifar10", "smoke_gdas", "smoke_snas", "pdarts_cifar10", "smoke_pdarts"]
# A search small enough for the test suite: 16 px digits, a 3-cell C=4 supernet, 2 steps per epoch,
# 4 epochs of which 1 warm-up (the smoke recipe's own 8 and 5 are for a person's first result).
TINY = ["image_size=16", "C=4", "layers=3", "batch_size=16", "max_steps_per_epoch=2", "progress=false",
        "epochs=4", "warmup_epochs=1"]


def tiny_recipe(*extra: str) -> SearchRecipe:
    return load_search_recipe(REPO / "recipes" / "smoke_search.yaml", [*TINY, *extra])


def test_fewer_nodes_per_cell_search_and_concatenate_them_all(tmp_path):
    """steps=2: the cell output concatenates its two nodes (it asked for four and crashed before)."""
    search(tiny_recipe("steps=2", "epochs=1", "warmup_epochs=0", "max_steps_per_epoch=1"), out=tmp_path / "run")
    genotype = Genotype.from_file(tmp_path / "run" / "genotype.yaml")
    assert len(genotype.normal.nodes) == 2 and tuple(genotype.normal.concat) == (2, 3)
    with pytest.raises(ConfigError, match="multiplier=4 .* steps=2"):
        SearchNetwork(C=4, layers=3, steps=2, multiplier=4)


@pytest.mark.parametrize("name", SEARCH_RECIPES)
def test_bundled_search_recipes_parse(name):
    recipe = load_search_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.name and recipe.epochs >= 1


def test_pcdarts_recipe_is_the_papers_protocol():
    r = load_search_recipe(REPO / "recipes" / "cifar10.yaml")
    assert (r.strategy, r.epochs, r.batch_size, r.lr, r.arch_lr, r.partial_k, r.warmup_epochs) == \
        ("pcdarts", 50, 256, 0.1, 6e-4, 4, 15)
    r = load_search_recipe(REPO / "recipes" / "pcdarts_imagenet.yaml")
    assert (r.partial_k, r.batch_size, r.warmup_epochs, r.stem) == (2, 1024, 35, "imagenet")


def test_misspelt_recipe_key_is_named():
    with pytest.raises(RecipeError, match=r"unknown recipe key 'partial_kk'.*Did you mean 'partial_k'"):
        tiny_recipe("partial_kk=2")
    with pytest.raises(RecipeError, match="strategy"):
        tiny_recipe("strategy=enas")


def test_cli_search_writes_a_genotype_that_load_accepts(tmp_path):
    run = tmp_path / "run"
    args = ["search", "--recipe", str(REPO / "recipes" / "smoke_search.yaml"), "--out", str(run),
            *[a for kv in (*TINY, "epochs=2") for a in ("--set", kv)]]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "genotype.yaml" in result.output
    genotype = nasnetzoo.Genotype.from_file(run / "genotype.yaml")
    assert genotype.provenance["strategy"] == "pcdarts" and genotype.provenance["dataset"] == "digits"
    model = nasnetzoo.load(str(run / "genotype.yaml"), C=8, layers=5)  # the CIFAR-shaped network
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert nasnetzoo.load(run, C=8, layers=5).genotype == genotype     # the run directory works too
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert set(history[0]["distribution"]) == {"alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"}
    assert (run / "genotypes" / "epoch_002.yaml").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and all("val_acc" in r and "param_free_ops" in r for r in records)
    if pytest.importorskip("matplotlib"):
        assert (run / "alphas.png").stat().st_size > 10_000
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "already holds a search" in again.output


@pytest.mark.parametrize("strategy", ["pcdarts", "parsec"])
def test_resumed_search_ends_like_an_uninterrupted_one(strategy, tmp_path):
    recipe = tiny_recipe("epochs=3", "warmup_epochs=0", f"strategy={strategy}",
                         *(["edge_norm=false", "partial_k=1", "parsec_samples=2"] if strategy == "parsec" else []))
    whole = search(recipe, out=tmp_path / "whole")
    search(recipe, out=tmp_path / "cut", on_epoch_end=lambda epoch: epoch == 0)   # "killed" after epoch 1
    resumed = search(prepare_resume(tmp_path / "cut"), resume=tmp_path / "cut")
    assert resumed.genotype == whole.genotype
    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["history"] == b["history"]


def test_parsec_warm_start_from_another_run(tmp_path):
    parsec = ["strategy=parsec", "edge_norm=false", "partial_k=1", "parsec_samples=2", "epochs=1", "warmup_epochs=0"]
    source = search(tiny_recipe(*parsec), out=tmp_path / "proxy")
    pi = torch.load(tmp_path / "proxy" / CHECKPOINT, weights_only=False)["strategy"]["pi"]
    result = CliRunner().invoke(cli, ["search", "--recipe", str(REPO / "recipes" / "smoke_search.yaml"),
                                      "--out", str(tmp_path / "target"), "--init-distribution", str(source.run_dir),
                                      *[a for kv in (*TINY, *parsec, "epochs=1", "arch_lr=0.0") for a in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    target_pi = torch.load(tmp_path / "target" / CHECKPOINT, weights_only=False)["strategy"]["pi"]
    for key in pi:  # lr 0: the warm-started distribution is carried over unchanged
        assert torch.allclose(pi[key], target_pi[key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# P-DARTS: 3 stages of one epoch (3, 4, 5 cells), two network changes on every rank.
DDP_EPOCHS = {"smoke_pdarts": ["epochs=3", "options.add_layers=[0,1,2]"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smoke_search", "smoke_gdas", "smoke_snas", "smoke_pdarts"])
def test_ddp_search_keeps_architecture_identical_on_every_rank(name, tmp_path):
    """Two gloo processes on different data shards: after the search every parameter, weights and
    alphas/betas alike, is bitwise the same on both ranks (GDAS and SNAS: every rank drew the same
    samples; P-DARTS: every rank built the same stages), and the ranks' augmentations drew from
    different RNG states."""
    import torch.multiprocessing as mp

    recipe = load_search_recipe(REPO / "recipes" / f"{name}.yaml",
                                [*TINY, *DDP_EPOCHS.get(name, ["epochs=2"]), "warmup_epochs=0"]).to_dict()
    out = str(tmp_path / "ddp")
    mp.spawn(_ddp_alphas_worker, args=(2, _free_port(), out, recipe), nprocs=2, join=True)
    a0 = torch.load(Path(out) / "params_rank0.pt")
    a1 = torch.load(Path(out) / "params_rank1.pt")
    assert {"alphas_normal", "alphas_reduce"} <= set(a0) and ("betas_reduce" in a0) == (name == "smoke_search")
    assert ("samples" in a0) == (name in ("smoke_gdas", "smoke_snas"))
    for key in a0:
        if key != "augment_rng":
            assert torch.equal(a0[key], a1[key]), key
    assert nasnetzoo.Genotype.from_file(Path(out) / "genotype.yaml")
    # ... while each rank crops and flips its shard with draws of its own (the RNG at the first batch)
    assert not torch.equal(a0["augment_rng"], a1["augment_rng"])


def _ddp_alphas_worker(rank: int, world: int, port: int, out: str, recipe: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from nasnetzoo.search import runner

    captured = {}
    original = runner.build_strategy

    def spy(recipe_, network):
        captured["network"] = network
        strategy = original(recipe_, network)
        if hasattr(strategy, "sample") and not hasattr(strategy, "pi"):   # GDAS, SNAS: record each sample
            draw = strategy.sample

            def recorded():
                sample = draw()
                samples.append(torch.cat([(v[1] if isinstance(v, tuple) else v).detach().double().flatten()
                                          for v in sample.values()]))
                return sample

            strategy.sample = recorded
        return strategy

    samples = []
    runner.build_strategy = spy
    from nasnetzoo.data.augment import BatchAugment

    augment = BatchAugment.__call__

    def first_draw(self, x, train=True):   # the RNG state the first augmented batch draws from
        captured.setdefault("augment_rng", torch.get_rng_state())
        return augment(self, x, train=train)

    BatchAugment.__call__ = first_draw
    search(SearchRecipe(**recipe), out=out)
    net = captured["network"]
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    params["augment_rng"] = captured["augment_rng"]
    if samples:
        params["samples"] = torch.stack(samples)
    torch.save(params, Path(out) / f"params_rank{rank}.pt")


def test_imagenet_subset_and_search_data(tmp_path):
    from PIL import Image

    from nasnetzoo.search.data import build_search_data

    for c in range(3):
        folder = tmp_path / "imagenet" / "train" / f"n0{c}"
        folder.mkdir(parents=True)
        for i in range(40):
            Image.new("RGB", (40, 40), (c * 80, i * 6, 0)).save(folder / f"img{i}.JPEG")
    result = CliRunner().invoke(cli, ["imagenet-subset", str(tmp_path / "imagenet"), str(tmp_path / "sub"),
                                      "--train-fraction", "0.1", "--arch-fraction", "0.05"])
    assert result.exit_code == 0, result.output
    assert "3 classes: 12 images" in result.output and "6 in" in result.output
    train = {p.name for p in (tmp_path / "sub" / "train" / "n00").iterdir()}
    arch = {p.name for p in (tmp_path / "sub" / "arch" / "n00").iterdir()}
    assert len(train) == 4 and len(arch) == 2 and not train & arch
    recipe = load_search_recipe(REPO / "recipes" / "pcdarts_imagenet.yaml",
                                [f"data_dir={tmp_path / 'sub'}", "image_size=32", "workers=0", "batch_size=4"])
    data = build_search_data(recipe, micro_batch=4, device=torch.device("cpu"))
    x, y = next(iter(data.weights))
    assert x.shape == (4, 3, 32, 32) and data.num_classes == 3 and "6 (arch/)" in data.description
    again = CliRunner().invoke(cli, ["imagenet-subset", str(tmp_path / "imagenet"), str(tmp_path / "sub")])
    assert again.exit_code != 0 and "already holds a subset" in again.output


def test_a_collapsed_normal_cell_is_warned_on_the_epoch_line_and_the_last_line(tmp_path, monkeypatch):
    """More than 6 of the normal cell's 8 ops parameter-free: both lines say so, with the reason."""
    from nasnetzoo.search.strategies.darts import DARTSStrategy

    derive = DARTSStrategy.derive

    def pools_only(self, **kwargs):
        data = derive(self, **kwargs).to_dict()
        data["normal"]["nodes"] = [[["max_pool_3x3", e[1]] for e in node] for node in data["normal"]["nodes"]]
        return Genotype.from_dict(data)
    monkeypatch.setattr(DARTSStrategy, "derive", pools_only)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["search", "--recipe", "smoke_search", "--out", str(run),
                                      *[a for kv in (*TINY, "epochs=1", "max_steps_per_epoch=1", "progress=true")
                                        for a in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.replace("\r", "\n").splitlines() if "WARNING" in line]
    warning = "WARNING: 8 of the normal cell's 8 ops are parameter-free"
    assert sorted(line.split(":")[0] for line in lines) == ["epoch 1/1", "searched 1 epochs"], lines
    assert all(warning in line and "warmup_epochs" in line for line in lines), lines
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["param_free_ops"] == 8 and record["param_free_warning"] is True
