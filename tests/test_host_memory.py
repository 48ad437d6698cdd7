"""trainer/loop/host_memory.py: after keep_freed_memory, memory a step frees is reused by the next
steps without new page faults. Measured in a fresh interpreter (the allocator's state is per process),
by the kernel's own count of minor page faults (getrusage)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STEPS = """
import json, resource, sys
import torch
from trainer.loop.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
count, mib = int(sys.argv[2]), int(sys.argv[3])
faults = []
for step in range(6):  # a step's activations: blocks made, touched (ones) and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(mib << 18) for _ in range(count)]  # float32: 4 bytes each
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")


def steps(mode: str, count: int, mib: int) -> dict:
    """Minor page faults of each of 6 steps that allocate, touch and free `count` blocks of `mib` MiB."""
    done = subprocess.run([sys.executable, "-c", STEPS, mode, str(count), str(mib)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


def test_a_steps_blocks_are_reused_once_the_heap_has_settled():
    kept = steps("keep", count=20, mib=1)  # many blocks of about a MiB, like a small net's activations
    assert kept["kept"] is True
    first, settled = kept["faults"][0], kept["faults"][3:]
    assert first > 1000, kept  # 20 MiB touched for the first time: thousands of 4 KiB pages
    assert max(settled) < first / 20, kept
    # glibc's default faults on every step here in some processes and settles in others, by address
    # layout (the history dependence the module removes): too unsteady to assert, so without the
    # setting this test fails in some runs, not all.

