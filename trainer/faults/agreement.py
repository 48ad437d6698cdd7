"""Every rank learns how a collective step went, so that a failure on one never leaves the
others waiting in a barrier for it (gloo's/NCCL's default: 30 minutes, then a traceback each).

Pattern (trainer.rundir.checkpoint, trainer.rundir.resume): each rank runs its part inside
`try`, keeps its own exception, then calls `agree(accelerator, own_error, what)` in place of
`wait_for_everyone`. `agree` is one all-gather of "ok / error text" (through the Accelerator:
no rank reads RANK itself); when any rank failed, every rank raises:
    the main process  its own exception, or, when only others failed, an OSError rebuilt from
                      the first failed rank's (same errno, its path, "(process N)" in the text),
                      or a RuntimeError with that rank's message when its error was no OSError;
    every other rank  PeerFailed naming the failed rank(s) and why (chained to its own error),
                      so that a top-level handler can report once, on the main process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from trainer.faults.exits import EXIT_IO, EXIT_PEER, IO_ERRNOS, PeerFailed

T = TypeVar("T")


@dataclass(frozen=True)
class _Outcome:
    rank: int
    text: str  # str(exception)
    kind: str  # exception class name
    errno: int | None = None
    strerror: str | None = None
    filename: str | None = None


def _outcome(rank: int, err: BaseException) -> _Outcome:
    if isinstance(err, OSError):
        return _Outcome(rank, str(err), type(err).__name__, err.errno, err.strerror,
                        None if err.filename is None else str(err.filename))
    return _Outcome(rank, str(err), type(err).__name__)


def agree(accelerator: Accelerator, error: BaseException | None, what: str) -> None:
    """Collective (every rank calls it at the same point, with its own error or None): returns
    when every rank succeeded, else raises on every rank (see the module docstring). Also a barrier."""
    mine = None if error is None else _outcome(accelerator.process_index, error)
    outcomes = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    failed = [o for o in outcomes if o is not None]
    if not failed:
        return
    if not accelerator.is_main_process:
        io = any(o.errno in IO_ERRNOS for o in failed)
        raise PeerFailed(what, [(o.rank, o.text) for o in failed], EXIT_IO if io else EXIT_PEER) from error
    if error is not None:
        raise error
    first = failed[0]
    if first.errno is not None:
        raise OSError(first.errno, f"{first.strerror} (process {first.rank})", first.filename)
    raise RuntimeError(f"{what} failed on process {first.rank}: {first.kind}: {first.text}")


def main_decides(accelerator: Accelerator, what: str, decide: Callable[[], T]) -> T:
    """Collective: `decide()` on the main process only, its answer on every rank. For what one
    process must judge for all (a file another rank may be reading, a shared file system that
    answers each rank differently); an error in `decide` raises on every rank, as `agree` does."""
    answer, error = None, None
    if accelerator.is_main_process:
        try:
            answer = decide()
        except Exception as err:  # every rank must hear of it
            error = err
    agree(accelerator, error, what)
    if accelerator.num_processes > 1:
        answer = broadcast_object_list([answer])[0]
    return answer
