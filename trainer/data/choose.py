"""--loader: stream the shards every epoch, or decode them once onto the device; auto picks by memory.
And --workers, when not given: as many as the machine's CPUs allow each process."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import psutil
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from trainer.config import ConfigError, TrainConfig
from trainer.data.device import DeviceData, device_bytes
from trainer.data.stream import RunData, ShardStream

AUTO_FRACTION = 0.5  # --loader auto keeps the data on the device when it needs at most this part of the free memory
DEVICE_FRACTION = 0.9  # --loader device refuses to start above this part (the model and activations need the rest)
GB = 1e9
MAX_DEFAULT_WORKERS = 8  # each worker imports torch (~0.3 GB); past this many the stream loader is rarely the limit


def default_workers(local_processes: int) -> int:
    """--workers unset: the CPUs this process may use (its affinity: a cgroup's cpuset, `taskset`,
    SLURM's --cpus-per-task), shared among the processes on its machine. PyTorch warns when one
    loader has more workers than that; fewer would leave cores idle while a step waits for data."""
    return max(1, min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)) // local_processes))


def free_bytes(device: torch.device, processes: int) -> int:
    """Memory this process may fill: the GPU's free memory, or on CPU the host's available RAM
    shared by all processes (they may all run on this host)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available // processes


def choose_loader(loader: str, need: int, free: int, device: str) -> tuple[str, str]:
    """('stream' | 'device', why) for --loader `loader` when the device data needs `need` of `free`
    bytes per process; ConfigError when --loader device cannot fit."""
    numbers = f"{need / GB:.2f} GB per process, {free / GB:.2f} GB free on {device}"
    if loader == "stream":
        return "stream", "--loader stream"
    if loader == "device":
        if need > DEVICE_FRACTION * free:
            raise ConfigError(f"--loader device: the decoded splits need {numbers} (at most {DEVICE_FRACTION:.0%} of it "
                              "may be used); use --loader stream, a smaller --image-size, or fewer processes per machine")
        return "device", "--loader device"
    if need > AUTO_FRACTION * free:
        return "stream", f"--loader auto: {numbers}, over the {AUTO_FRACTION:.0%} auto limit"
    return "device", f"--loader auto: {numbers}, within {AUTO_FRACTION:.0%}"


def open_data(cfg: TrainConfig, accelerator: Accelerator) -> tuple[RunData, str]:
    """The run's data source for --loader, and a line saying which and why."""
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    workers_said = ""
    if cfg.workers is None:  # the processes on this machine share its CPUs
        host = socket.gethostname()
        cfg = replace(cfg, workers=default_workers(gather_object([host]).count(host)))
        workers_said = f", {cfg.workers} loader worker(s) per process (--workers unset: this machine's CPUs)"
    if cfg.loader == "stream":
        name, why = choose_loader("stream", 0, 0, device.type)
    else:
        # Every rank must choose alike: decide on the smallest free memory of all ranks.
        free = min(gather_object([free_bytes(device, world)]))
        name, why = choose_loader(cfg.loader, device_bytes(cfg, world), free, device.type)
    if name == "stream":
        return ShardStream(cfg, rank=rank, world_size=world), f"loader: stream ({why}){workers_said}"
    # With a cache, each machine's first process decodes and writes it; the others then map it.
    # Decoding draws from the global RNG (each DataLoader seeds its workers from it) and mapping
    # does not: fork it, so that dropout etc. are the same whether the data came from the cache.
    with accelerator.local_main_process_first(), torch.random.fork_rng(devices=[]):
        data = DeviceData(cfg, rank=rank, world_size=world, device=device)
    return data, f"loader: device ({why}){workers_said}; {data.describe()}"
