"""A module's `python -m` entry run inside the test process (runpy), for tests of what a command
prints and returns: the module's own `if __name__ == "__main__"` code, as `python -m` runs it, without
a new interpreter importing torch and the rest again (5-10 s a time on the shared 2-core box). Real
subprocesses stay where the process matters (signals, locks held by another process, exit paths)."""

from __future__ import annotations

import runpy
import sys
import warnings

import pytest


def run_module(name: str, args: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`python -m NAME ARGS...` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()  # only what this command prints
    argv = sys.argv
    sys.argv = [name, *map(str, args)]
    try:
        with warnings.catch_warnings():
            # runpy warns that the module was imported before: the tests import it on purpose.
            warnings.simplefilter("ignore", RuntimeWarning)
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    if isinstance(code, str):  # sys.exit("message"): the interpreter prints it and exits 1
        code, err = 1, err + code + "\n"
    return code or 0, out, err
