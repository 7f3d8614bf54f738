"""benchmarks/model_resolve.py: the first and the cached calls are timed in an empty HONE_HOME of their own,
the cache is not rebuilt, and the user's HONE_HOME is left as it was."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from hone.errors import HoneError


def test_a_model_folder_is_timed_without_a_conversion(
    tmp_path: Path, tiny_model_dir: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_script("model_resolve")
    before = os.environ["HONE_HOME"]

    result = bench.run(str(tiny_model_dir), 5, tmp_path / "home")

    assert os.environ["HONE_HOME"] == before
    assert result["path"] == str(tiny_model_dir)
    assert not result["converted"] and not result["reconverted"]
    assert len(result["cached_seconds"]) == 5 and min(result["cached_seconds"]) > 0
    assert result["ratio"] == pytest.approx(result["first_seconds"] / result["cached_median_seconds"])
    assert not (tmp_path / "home").exists(), "a model folder is used where it is"


def test_the_home_is_restored_after_an_error(
    tmp_path: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_script("model_resolve")
    before = os.environ["HONE_HOME"]
    with pytest.raises(HoneError, match="not a built-in alias"):
        bench.run("no-such-model", 1, tmp_path / "home")
    assert os.environ["HONE_HOME"] == before
