"""Shared fixtures: a small synthetic VOCdevkit and its shards (session scope, a few seconds).

Other parts' tests use these too: keep them small and fast.

Two tiers: `./launch.sh test` runs everything (CI); `./launch.sh test --quick` runs the tests not
marked `slow`, for the edit-run loop. A test is slow when it starts trainer processes (the trainer,
tests/paused_run.py, trainer.suite's runs), a launcher (accelerate launch, trainer.launch,
launch.sh) or SLURM: mark it `@pytest.mark.slow` (or its module, `pytestmark`). Tests that use the
SLURM fixtures are marked here; any other test that starts one of those processes without the mark
fails, saying so (`_refuse_slow_starts`), so the quick tier stays what it says.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

# One compute thread per test process: xdist runs one process per core, and the trainers the tests
# start run with OMP_NUM_THREADS=1 (train_helpers.env). Two threads per process on a busy 2-core box
# spin against each other (tests/test_models.py's training steps: 64 s -> 16 s under load). Set before
# torch is imported; processes the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from shards.pack import PackOptions, pack  # noqa: E402
from shards.synth import DEFAULT_BACKGROUNDS, generate  # noqa: E402
from slurm_cluster import LocalSlurm, ensure_hosts, why_not  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """munged, slurmctld and slurmd n1 + n2 with their own config in a temporary folder; stopped afterwards."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    ensure_hosts()
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: LocalSlurm):
    """The cluster for one test; every job is cancelled when the test ends, passed or failed, and the
    nodes are idle again before the next test starts."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


# Rough seconds each slow file takes (`./launch.sh test --durations=60` on the 2-core box,
# 2026-12-08: two workers, so under load), for the order below only: a file missing here is taken
# for a fast one and goes last. Add a new slow file (anything that starts trainers or a cluster)
# with its time.
FILE_SECONDS = {
    "test_slurm.py": 333, "test_hang.py": 181, "test_slurm_suite.py": 174, "test_gpu_check.py": 158,
    "test_train_ddp.py": 117, "test_train_single.py": 95, "test_faults.py": 87, "test_launch_sh.py": 77,
    "test_compile.py": 65, "test_run_ends_clean.py": 64, "test_train_device.py": 62, "test_models_torchvision.py": 60,
    "test_train_other_data.py": 49, "test_run_lock.py": 49, "test_suite.py": 48, "test_loader_workers.py": 38,
    "test_ema.py": 36, "test_models_timm.py": 25, "test_train_recipe.py": 21, "test_train_pretrained.py": 18, "test_evaluate.py": 18,
    "test_augment.py": 17, "test_shards_pack_safety.py": 15, "test_predict_evaluate_run.py": 15, "test_diverge.py": 12,
    "test_train_hidden_test.py": 10, "test_shards_verify.py": 10, "test_models.py": 8, "test_train_splits.py": 5,
    "test_device_loader.py": 5, "test_checkpoint_safety.py": 4, "test_shards_bench.py": 3,
}


SLURM_FIXTURES = {"slurm", "slurm_cluster"}


@pytest.hookimpl(tryfirst=True)  # before -m selects: the marks added here count for `-m "not slow"`
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the SLURM cluster are slow. Slowest files first: `./launch.sh test` hands whole
    files to its xdist workers in this order (--dist loadfile --no-loadscope-reorder; xdist's own
    order is by test count, which put the ~5 SLURM minutes last): longest first, so the short files
    at the end even the workers out."""
    for item in items:
        if SLURM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: a file's tests keep their order


# --- the quick tier's guard: a test not marked slow may not start a trainer, a launcher or SLURM

# python FILE / python -m MODULE that run the trainer or launch processes that do
TRAINER_FILES = ("trainer/main.py", "paused_run.py")
TRAINER_MODULES = {"trainer.main": "the trainer", "trainer.launch": "a launcher", "trainer.suite": "trainer.suite",
                   "accelerate.commands.launch": "a launcher", "torch.distributed.run": "a launcher"}
SLURM_PROGRAMS = {"sbatch", "srun", "salloc", "slurmctld", "slurmd", "munged"}


def starts_a_run(args) -> str | None:
    """What a command line starts that makes a test slow, in words; None for anything else."""
    if isinstance(args, (str, bytes, os.PathLike)):
        args = shlex.split(os.fsdecode(args))  # a shell line, or a lone program
    words = [os.fsdecode(arg) for arg in args]
    for i, word in enumerate(words):
        name = os.path.basename(word)
        if name in SLURM_PROGRAMS:
            return f"SLURM ({name})"
        if name == "launch.sh":
            return "launch.sh"
        if name in ("accelerate", "torchrun") and (name == "torchrun" or words[i + 1:i + 2] == ["launch"]):
            return f"a launcher ({name})"
        if word.endswith(TRAINER_FILES):
            return f"the trainer ({word})"
        if words[i - 1:i] == ["-m"] and word in TRAINER_MODULES:
            return f"{TRAINER_MODULES[word]} (-m {word})"
    return None


_running: pytest.Item | None = None  # the test whose setup, call or teardown runs now
_real_popen_init = subprocess.Popen.__init__


def _refuse_slow_starts(self, args, *rest, **kwargs) -> None:
    item = _running
    if item is not None and item.get_closest_marker("slow") is None:
        what = starts_a_run(args)
        if what is not None:
            pytest.fail(f"{item.nodeid} starts {what} but is not marked slow: mark it @pytest.mark.slow (the "
                        f"quick tier, ./launch.sh test --quick, starts no trainer, launcher or SLURM; "
                        f"tests/conftest.py)", pytrace=False)
    _real_popen_init(self, args, *rest, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _refuse_slow_starts  # every subprocess.run/Popen of the tests and their fixtures


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Module and session fixtures are set up within their first test's protocol: guarded as that test."""
    global _running
    _running = item
    try:
        return (yield)
    finally:
        _running = None
