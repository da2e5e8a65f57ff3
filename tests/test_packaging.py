"""The wheel is complete: installed into a separate virtual environment, outside the checkout, it
loads a model, carries its license and recipes, and runs the README's main job."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, site, wheel)``: a venv holding nasnetzoo from the wheel only, with the heavy
    dependencies (torch, ...) reached through a path entry to this environment's site-packages
    (a .pth line adds no editable-install hooks), and a ``nasnetzoo`` command in its bin/."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True)
    wheel = next(dist.glob("nasnetzoo-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)
    command = env_dir / "bin" / "nasnetzoo"
    command.write_text(f"#!{python}\nimport sys\nfrom nasnetzoo.cli import main\nsys.exit(main())\n")
    command.chmod(0o755)
    return python, site, wheel


def _outside(tmp_path) -> dict:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the checkout


def test_wheel_in_separate_venv_loads_model(installed, tmp_path):
    python, site, _ = installed
    # Every subpackage of the source tree made it into the wheel (pyproject lists them by hand).
    source_packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "nasnetzoo").rglob("__init__.py")}
    wheel_packages = {p.parent.relative_to(site).as_posix() for p in (site / "nasnetzoo").rglob("__init__.py")}
    assert source_packages <= wheel_packages, source_packages - wheel_packages

    code = ("import nasnetzoo, pathlib; "
            f"assert pathlib.Path(nasnetzoo.__file__).is_relative_to({str(site)!r}), nasnetzoo.__file__; "
            "m = nasnetzoo.load('PC-DARTS-ImageNet'); "
            "print(len(nasnetzoo.list_genotypes()), nasnetzoo.get_genotype('nasnet_a').name, type(m).__name__)")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, env=_outside(tmp_path))
    assert proc.returncode == 0, proc.stderr
    count, geno, cls = proc.stdout.split()
    assert int(count) >= 11 and geno == "nasnet_a" and cls == "DartsImageNetNetwork"


def test_wheel_carries_license_recipes_and_typing(installed, tmp_path):
    python, site, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert "nasnetzoo/py.typed" in names
    shipped = {Path(n).name for n in names if n.startswith("nasnetzoo/recipes/")}
    assert shipped == {p.name for p in (REPO / "recipes").glob("*.yaml")}
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "Classifier: Typing :: Typed" in metadata
    # a recipe resolves by name, and by the README's recipes/ path, from another folder
    code = ("from nasnetzoo.recipe_file import resolve_recipe; "
            "print(resolve_recipe('smoke_search')); print(resolve_recipe('recipes/smoke_train.yaml'))")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, env=_outside(tmp_path))
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.split()]
    assert [p.name for p in paths] == ["smoke_search.yaml", "smoke_train.yaml"]
    assert all(p.is_file() and p.is_relative_to(site) for p in paths)


def _readme_main_job() -> str:
    """The README's main job: the quick start's `nasnetzoo search ...` line, as written there."""
    lines = [line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
             if re.match(r"nasnetzoo search ", line)]
    assert lines, "README.md has no `nasnetzoo search ...` line"
    return lines[0]


@pytest.mark.slow
def test_readme_main_job_runs_from_the_wheel(installed, tmp_path):
    """One to two minutes: the search, `info` and the ONNX export, with the wheel's own recipe."""
    python, _, _ = installed
    env = _outside(tmp_path)
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", "-c", f"set -e; {_readme_main_job()}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "runs" / "quickstart" / "genotype.yaml").is_file()
    assert list((tmp_path / "runs" / "quickstart" / "export").rglob("*.onnx"))


def test_recipe_names_resolve_and_a_wrong_one_lists_the_bundled(tmp_path, monkeypatch):
    from nasnetzoo.recipe_file import RecipeError, read_yaml_mapping, resolve_recipe

    monkeypatch.chdir(tmp_path)  # not the checkout: names, not relative paths, find them
    assert resolve_recipe("smoke_search") == REPO / "recipes" / "smoke_search.yaml"
    assert resolve_recipe("recipes/smoke_train.yaml") == REPO / "recipes" / "smoke_train.yaml"
    own = tmp_path / "smoke_search.yaml"
    own.write_text("epochs: 1\n")
    assert resolve_recipe("smoke_search.yaml") == Path("smoke_search.yaml")  # a file given wins
    with pytest.raises(RecipeError, match=r"'smoke_serch' does not exist\. Bundled recipes \(pass a name\): .*smoke_search"):
        read_yaml_mapping("smoke_serch")


def test_the_offline_install_line_names_the_setuptools_that_the_build_requires():
    """docs/gpu.md's install with no network (no build isolation) needs the setuptools that
    pyproject's build-system asks for already there; an older floor in the docs sends a GPU user
    into a build that fails (setuptools 65 rejects the SPDX license field)."""
    floor = re.search(r'requires = \["setuptools>=([\d.]+)"\]', (REPO / "pyproject.toml").read_text()).group(1)
    doc = (REPO / "docs" / "gpu.md").read_text()
    stated = re.findall(r"setuptools >= ([\d.]+)", doc)
    assert stated and set(stated) == {floor}, (stated, floor)
    assert "--no-build-isolation --no-deps -e ." in doc and "PYTHONPATH=$PWD python" in doc
