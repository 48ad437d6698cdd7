"""``python -m models [NAME] [--image-size N]``: every model with its parameter count, or one model's layer table."""

import argparse

from . import check_model_name, describe
from .catalog import catalog


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models",
                                     description="List every model, or print one model's layer table.")
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="registered model name; without it: every model with its parameter count")
    parser.add_argument("--image-size", type=int, default=227, help="side of the square dummy input, pixels")
    args = parser.parse_args(argv)
    if args.name is None:
        print(catalog())
        return
    try:
        check_model_name(args.name)
    except ValueError as err:  # names the closest model; argparse's choices would print all 88 in the usage
        parser.exit(2, f"error: {err}\n")
    try:
        print(describe(args.name, args.image_size))
    except FileNotFoundError as err:  # pretrained weights not on disk: the message says where to put them
        parser.exit(2, f"error: {err}\n")
    except (ValueError, RuntimeError, AssertionError) as err:  # an input size this network cannot take
        parser.exit(2, f"error: --image-size {args.image_size}: {args.name} cannot take this input: {err}\n")


if __name__ == "__main__":
    main()
