"""``python -m models NAME [--image-size N]``: print a registered model's layer table."""

import argparse

from . import describe, list_models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models", description="Print a model's layer table.")
    parser.add_argument("name", choices=list_models(), help="registered model name")
    parser.add_argument("--image-size", type=int, default=227, help="side of the square dummy input, pixels")
    args = parser.parse_args(argv)
    try:
        print(describe(args.name, args.image_size))
    except FileNotFoundError as err:  # pretrained weights not on disk: the message says where to put them
        parser.exit(2, f"error: {err}\n")
    except (ValueError, RuntimeError) as err:  # an input size this network cannot take
        parser.exit(2, f"error: --image-size {args.image_size}: {args.name} cannot take this input: {err}\n")


if __name__ == "__main__":
    main()
