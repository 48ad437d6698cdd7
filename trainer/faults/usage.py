"""What the project's commands do alike on bad input: one `error: ...` line on stderr and exit 2,
never argparse's usage block or a traceback, so scripts can grep it and nothing looks like a crash."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line that points to --help (exit 2, as argparse does), never
    its usage block; or, with `raises`, that exception with the line (the trainer's settings raise
    ConfigError: N processes must not each print a usage block, and a YAML file's errors join in)."""

    def __init__(self, *args: object, raises: type[Exception] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.raises = raises

    def error(self, message: str) -> NoReturn:
        if self.raises is not None:
            raise self.raises(f"{message.removeprefix('argument ')} (see --help)")
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def refuse(message: str) -> int:
    """Print `message` as one error line; returns the exit status 2 for main() to return."""
    print("error: " + " ".join(message.splitlines()), file=sys.stderr)
    return 2
