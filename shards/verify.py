"""Check a shard set against the sha256 checksums its manifest recorded at pack time.

    python -m shards.verify SHARDS_DIR      (console script: voc-verify)

A damaged JPEG can still decode (2 KB zeroed in the middle of one gives a grey band, no
error), so the readers cannot notice; a checksum per shard file can. Exit status 0 when every
shard the manifest lists is present with its recorded sha256, 2 otherwise, with one
`error:` line naming the bad shard(s). The trainer runs the same check before training
(trainer.config.validate).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

from shards.manifest import MANIFEST_NAME, ManifestError, load_manifest

CHUNK = 1 << 20
SHOWN = 5  # bad shards named in one line


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def shard_names(manifest: dict) -> list[str]:
    """Every shard file the manifest lists, split by split."""
    return [name for record in manifest["splits"].values() for name in record["shards"]]


def bad_shards(shards_dir: str | Path, manifest: dict) -> list[str]:
    """'NAME: why' for each listed shard that is missing or differs from its recorded sha256.

    The manifest must have checksums (see `has_checksums`)."""
    shards_dir, recorded = Path(shards_dir), manifest["sha256"]
    bad = []
    for name in shard_names(manifest):
        path = shards_dir / name
        if name not in recorded:
            bad.append(f"{name}: no checksum in {MANIFEST_NAME}")
        elif not path.is_file():
            bad.append(f"{name}: missing")
        elif file_sha256(path) != recorded[name]:
            bad.append(f"{name}: sha256 differs from {MANIFEST_NAME} (changed or damaged since it was packed)")
    return bad


def has_checksums(manifest: dict) -> bool:
    """Whether the pack recorded sha256 checksums (manifests from before they existed did not)."""
    return isinstance(manifest.get("sha256"), dict)


def summarize(bad: Sequence[str]) -> str:
    more = len(bad) - SHOWN
    return "; ".join(bad[:SHOWN]) + (f"; and {more} more" if more > 0 else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", type=Path, metavar="SHARDS_DIR", help="a folder written by shards.pack")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.shards)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not has_checksums(manifest):
        print(f"error: {args.shards / MANIFEST_NAME} has no sha256 checksums (packed by an older shards.pack): "
              f"nothing to verify against; pack again to add them", file=sys.stderr)
        return 2
    bad = bad_shards(args.shards, manifest)
    if bad:
        print(f"error: {args.shards}: {len(bad)} bad shard(s): {summarize(bad)}; pack again or copy "
              f"the shard set again", file=sys.stderr)
        return 2
    names = shard_names(manifest)
    size = sum((args.shards / name).stat().st_size for name in names)
    print(f"{args.shards}: {len(names)} shards ({size / 1e6:.1f} MB) match the sha256 in {MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
