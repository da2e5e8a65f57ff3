"""The message helpers every module shares (nasnetzoo/errors.py)."""
from __future__ import annotations

import errno

from nasnetzoo.errors import did_you_mean, first_line, hint_for, os_error_line


def test_did_you_mean():
    assert did_you_mean("pcdart_cifar", ["gdas_imagenet", "pcdarts_cifar", "darts_v2_cifar"]) == \
        " Did you mean 'pcdarts_cifar', 'darts_v2_cifar'?"
    assert did_you_mean("PCDARTS_CIFAR", ["pcdarts_cifar"]) == " Did you mean 'pcdarts_cifar'?"
    assert did_you_mean("zzz", ["pcdarts_cifar"]) == ""
    assert did_you_mean("a1", ["a2", "a3", "a4", "a5"], n=1).count("'") == 2
    assert hint_for([]) == "" and hint_for(["x"]) == " Did you mean 'x'?"


def test_first_line():
    assert first_line(ValueError("\n  bad value\nmore detail\n")) == "bad value"
    assert first_line(MemoryError()) == "MemoryError"
    assert first_line(RuntimeError("   \n")) == "RuntimeError"


def test_os_error_line_names_the_target_path():
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device", "runs/a/last.pt")) == \
        "'runs/a/last.pt': no space left on the device; free some space or choose another location."
    # os.replace(tmp, target) failing: the target is what the user named.
    assert os_error_line(IsADirectoryError(errno.EISDIR, "Is a directory", ".x.tmp", None, "x.svg")).startswith(
        "'x.svg': a directory is in the way")
    assert os_error_line(OSError(errno.EIO, "Input/output error")) == "Input/output error."
