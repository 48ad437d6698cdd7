"""Score your own images with a trained run: the top classes of each, optionally a submission CSV.

  python -m trainer.predict --run RUN IMAGES_OR_FOLDERS... [--weights best|final|CHECKPOINT_DIR]
                            [--top K] [--out CSV] [--batch-size N] [--tta none|flip] [--cpu]

One process, on the GPU when there is one (--cpu: on the CPU). The network, image size and
precision are the run's (RUN/config.yaml); the weights are best/ (default, when the run has
it), the newest end-of-epoch checkpoint (final) or a checkpoint directory (trainer.run_model).
Each image is decoded and viewed exactly as the trainer evaluates (shards.reader.decode_rgb for
JPEG, decode_rgb_pil for anything else; shards.presets.eval_transform; normalize), so a test
image's JPEG as stored in the shards gets the scores the run's submission.csv has for it.

Folders are walked (recursively, sorted) for .jpg, .jpeg and .png files of any case; files named
on the command line are read whatever their extension. Grayscale, CMYK, palette and RGBA images
become RGB (an alpha channel is dropped). An image that cannot be read is named with the reason
in the summary and the others go on. --out writes the submission.csv format (ids = file names
without extension; two files with the same id are refused). Exit status 0 when at least one
image was scored, 2 (one "error:" line) when none was or the arguments are bad.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.table import Table

from shards.images import ImageError, orientation
from shards.presets import eval_transform
from shards.reader import decode_rgb, decode_rgb_pil
from trainer.evaluation.tta import TTA_CHOICES
from trainer.faults.usage import OneLineParser, refuse
from trainer.rundir.outputs import write_submission
from trainer.tools.run_model import WEIGHT_CHOICES, RunModel, class_scores, open_run, run_settings
from trainer.config import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_MAGIC = b"\xff\xd8"  # JPEG content, whatever the name says: the trainer's decoder


class Unreadable(ValueError):
    """An image file that cannot be decoded; the message is the reason."""


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given and the images inside folders (sorted), each file once; ConfigError for a
    path that does not exist or a folder without images."""
    found: dict[Path, Path] = {}  # resolved -> as the user wrote it: a file named twice is scored once
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise ConfigError(f"{path}: no {', '.join(IMAGE_SUFFIXES)} files in this folder")
        elif path.is_file():
            inside = [path]
        else:
            raise ConfigError(f"{path}: no such file or folder")
        for file in inside:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def check_ids(files: Sequence[Path]) -> None:
    """Submission ids are file stems: two files with one stem would be two rows with one id."""
    by_id: dict[str, Path] = {}
    for file in files:
        if file.stem in by_id:
            raise ConfigError(f"--out: {by_id[file.stem]} and {file} would both have the id '{file.stem}' "
                              "(ids are file names without extension); rename one or score them separately")
        by_id[file.stem] = file


def upright_rgb(data: bytes) -> torch.Tensor:
    """uint8 [3, H, W] RGB with the EXIF orientation applied."""
    with Image.open(io.BytesIO(data)) as image:
        return torch.from_numpy(np.array(ImageOps.exif_transpose(image).convert("RGB"))).permute(2, 0, 1)


def decode_image(path: Path) -> torch.Tensor:
    """uint8 [3, H, W] RGB, decoded like the shard readers do; Unreadable with the reason otherwise."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise Unreadable(f"cannot read the file: {err.strerror}") from None
    try:
        if orientation(data)[0] != 1:  # stored sideways with an EXIF tag: upright, as packing stores a photo
            return upright_rgb(data)   # without XML (shards.images), so it scores as it looks
        return decode_rgb(data) if data[:2] == JPEG_MAGIC else decode_rgb_pil(data)
    except ImageError:
        raise Unreadable("not an image: neither JPEG nor PNG nor another format PIL reads") from None
    except UnidentifiedImageError:
        raise Unreadable("not an image: neither JPEG nor PNG nor another format PIL reads") from None
    except Exception as err:  # noqa: BLE001 - a broken file is reported and the others go on
        # torchvision's messages start with its source path: keep the last part, the reason
        raise Unreadable(f"does not decode: {str(err).split(', ')[-1]}") from None


def score_files(files: Sequence[Path], run: RunModel, accelerator: Accelerator, batch_size: int,
                tta: str = "none") -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """(scored files, their float32 [N, C] scores, (unreadable file, reason) pairs), in file order.
    tta: trainer.evaluation.tta."""
    transform = eval_transform(run.cfg.image_size)
    scored: list[Path] = []
    chunks: list[np.ndarray] = []
    unreadable: list[tuple[Path, str]] = []
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        chunks.append(class_scores(run, torch.stack([image for _, image in batch]), accelerator, tta))
        scored.extend(path for path, _ in batch)
        batch.clear()

    for path in files:
        try:
            batch.append((path, transform(decode_image(path))))
        except Unreadable as err:
            unreadable.append((path, str(err)))
            continue
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    scores = np.concatenate(chunks) if chunks else np.zeros((0, run.classes.num_classes), dtype=np.float32)
    return scored, scores, unreadable


def top_table(files: Sequence[Path], scores: np.ndarray, names: Sequence[str], k: int, title: str) -> Table:
    """One block of k rows per image: its most probable classes, best first."""
    table = Table(title=title)
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for path, row in zip(files, scores):
        best = np.argsort(-row, kind="stable")[:k]
        for rank, c in enumerate(best):
            table.add_row(str(path) if rank == 0 else "", names[c], f"{row[c]:.4f}", end_section=rank == k - 1)
    return table


def summary_line(scored: int, unreadable: Sequence[tuple[Path, str]]) -> str:
    listed = "; ".join(f"{path} ({reason})" for path, reason in unreadable)
    return f"{scored} images scored, {len(unreadable)} unreadable" + (f": {listed}" if listed else "")



def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m trainer.predict", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGES_OR_FOLDERS")
    parser.add_argument("--run", type=Path, required=True, help="a training run's --out (holds config.yaml)")
    parser.add_argument("--weights", metavar="WEIGHTS", help=f"{WEIGHT_CHOICES} (default: best if the run has it, "
                                                             "else final)")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    parser.add_argument("--out", type=Path, metavar="CSV", help="also write the scores in the submission.csv format")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per forward (default 32)")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="flip: average each image's and its mirror's probabilities (default none, whatever "
                             "the run used: a prediction is of one image as it is unless asked)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 when at least one image was scored, 2 (and one 'error:' line on stderr) otherwise."""
    args = _parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    try:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size {args.batch_size}: must be at least 1")
        cfg, classes = run_settings(args.run)
        if not 1 <= args.top <= classes.num_classes:
            raise ConfigError(f"--top {args.top}: must be between 1 and {classes.num_classes} (the run's classes)")
        files = image_files(args.images)
        if args.out is not None:
            check_ids(files)
        run, accelerator, note = open_run(args.run, cfg, classes, args.weights, cpu=args.cpu)
    except ConfigError as err:
        return refuse(str(err))
    console.print(f"{run.cfg.model} at {run.cfg.image_size} px on {accelerator.device}, weights "
                  f"{run.weights.described}" + (f" ({note})" if note else "")
                  + ("; --tta flip: each image and its mirror" if args.tta == "flip" else ""))
    scored, scores, unreadable = score_files(files, run, accelerator, args.batch_size, args.tta)
    if not scored:
        return refuse(f"none of the images could be scored: {summary_line(0, unreadable)}")
    console.print(top_table(scored, scores, run.classes.names, args.top, title=f"Top {args.top} classes, {run.weights.label} weights"))
    console.print(summary_line(len(scored), unreadable))
    if args.out is not None:
        try:
            write_submission(args.out, [path.stem for path in scored], scores, run.classes.names)
        except OSError as err:
            return refuse(f"--out {args.out}: cannot write it ({err}); pick a writable path")
        console.print(f"wrote {args.out} ({len(scored)} rows, submission.csv format)")
    return 0



if __name__ == "__main__":
    sys.exit(main())
