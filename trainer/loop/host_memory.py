"""glibc's malloc told to keep the memory a training step frees, so the next step reuses it instead
of taking fresh pages from the kernel (a page fault and a zeroed page each 4 KiB).

PyTorch's CPU tensors come from malloc. By default glibc serves blocks from 128 KiB up with mmap and
gives the top of its heap back to the kernel once more than M_TRIM_THRESHOLD of it is free, raising
both thresholds as large blocks are freed. Which regime a step's activations (a few MB each) land
in then depends on everything the process allocated before: on the demo recipe, one process, the
trainer's steps paid for page faults that a bare loop with a different allocation history did not
(medians 28.7 against 29.8 images/s; with these settings 30.2 against 29.6; docs/performance.md). Fixing
the thresholds at the top of glibc's own range makes the reuse independent of that history: blocks
under 32 MiB come from the heap, and freed heap memory is kept up to 64 MiB (glibc's largest
dynamic values). Large one-off buffers (the decoded splits) still go to mmap and back. (A single
block of tens of MB freed and made again each step is still faulted in every time here, by a cause
not found: tests/test_host_memory.py checks the many-block pattern of a small net's activations.)

Nothing to do without glibc (musl, macOS): `keep_freed_memory` says whether it was set.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc's dynamic rule sets with it


def keep_freed_memory() -> bool:
    """Set glibc's thresholds in this process (see the module doc); True when glibc took both."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
