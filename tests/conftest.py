"""Shared fixtures: a small synthetic VOCdevkit and its shards (session scope, a few seconds).

Other parts' tests use these too: keep them small and fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from shards.pack import PackOptions, pack
from shards.synth import DEFAULT_BACKGROUNDS, generate

# Small, but every split spans several uneven shards (5 samples per shard): enough for
# 2 ranks x 2 workers, and odd counts so "every id once" is not satisfied by luck.
FIXTURE_SIZES = {"train": 24, "val": 16, "test": 17}
FIXTURE_SAMPLES_PER_SHARD = 5


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOCdevkit folder (holding VOC2007/) made by shards.synth."""
    out = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    backgrounds = DEFAULT_BACKGROUNDS if DEFAULT_BACKGROUNDS.is_dir() else None
    generate(out, FIXTURE_SIZES, seed=0, backgrounds_dir=backgrounds)
    return out


@pytest.fixture(scope="session")
def shards_dir(voc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`voc_root` packed with shards.pack (train/val/test, 5 samples per shard)."""
    out = tmp_path_factory.mktemp("packed") / "shards"
    pack([voc_root], out, PackOptions(samples_per_shard=FIXTURE_SAMPLES_PER_SHARD), Console(quiet=True))
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The SLURM tests first: under `./launch.sh test` (xdist, whole files per worker) their ~5
    minutes of mostly waiting on the scheduler then run beside the rest instead of after it."""
    items.sort(key=lambda item: item.path.name != "test_slurm.py")  # stable: the rest keep their order
