"""The wheel ships the genotypes and the zoo data: installed into a separate virtual environment,
it loads a model from outside the repository."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def test_wheel_in_separate_venv_loads_model(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True)
    wheel = next(dist.glob("nasnetzoo-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The heavy dependencies (torch, ...) come from this environment's site-packages via a path
    # entry; nasnetzoo itself only from the wheel (a .pth line adds no editable-install hooks).
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)

    # Every subpackage of the source tree made it into the wheel (pyproject lists them by hand).
    source_packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "nasnetzoo").rglob("__init__.py")}
    wheel_packages = {p.parent.relative_to(site).as_posix() for p in (site / "nasnetzoo").rglob("__init__.py")}
    assert source_packages <= wheel_packages, source_packages - wheel_packages

    code = ("import nasnetzoo, pathlib; "
            f"assert pathlib.Path(nasnetzoo.__file__).is_relative_to({str(site)!r}), nasnetzoo.__file__; "
            "m = nasnetzoo.load('PC-DARTS-ImageNet'); "
            "print(len(nasnetzoo.list_genotypes()), nasnetzoo.get_genotype('nasnet_a').name, type(m).__name__)")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    count, geno, cls = proc.stdout.split()
    assert int(count) >= 11 and geno == "nasnet_a" and cls == "DartsImageNetNetwork"
