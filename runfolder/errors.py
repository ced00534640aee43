"""The one convention for bad input, for every entry point: one line on stderr, exit status 2.

Bad input is anything a user can fix by changing a flag or a file: a missing run folder, a malformed
TSV, an unknown model name. It is reported as ``error: <one line naming the flag or file and what was
expected>`` and exit status 2, never as a traceback or an argparse usage dump. Three pieces, defined once:

    InputError      the base class of every exception meaning bad input (CheckpointError, SpecError, ...
                    derive from it), raised anywhere below an entry point
    OneLineParser   the argparse parser of every entry point: a bad flag is one line and exit status 2
    run_main        what every `if __name__ == "__main__":` calls: runs `main`, turns an InputError raised
                    anywhere below it into the one line and exit status 2

    if __name__ == "__main__":
        run_main(main)

Standard library only, so the torch-free report and every layer above it can import it.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
from collections.abc import Callable
from typing import Any, NoReturn

BAD_INPUT_EXIT_STATUS = 2  # argparse's own status for a bad flag, so flags and files exit alike


class InputError(ValueError):
    """Bad input a user can fix (a flag, a file, a folder); the message is one line naming it and what
    was expected."""


def one_line(message: object) -> str:
    """The message on one line: whitespace runs (newlines included) become one space."""
    return " ".join(str(message).split())


def fail(message: object) -> NoReturn:
    """Print ``error: <message>`` (one line) to stderr and exit with the bad-input status."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(BAD_INPUT_EXIT_STATUS)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose bad flags end the program with one line and exit status 2, not a usage
    dump (`--help` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def run_main(main: Callable[[], Any], status: Callable[[Any], int] | None = None) -> NoReturn:
    """Run an entry point's `main()` and exit: an InputError raised anywhere below it is one line and exit
    status 2; otherwise the status is `status(result)`, or the result where `main` returns an int, else 0."""
    # The interpreter's last full collection walks every object of torch, open_clip and transformers,
    # 1.3-1.4 s of CPU per process for memory the OS takes back anyway: frozen after every other atexit
    # handler (they run last-registered first), so it is skipped (Python never promised __del__ at exit).
    atexit.register(gc.freeze)
    try:
        result = main()
    except InputError as error:
        fail(error)
    if status is not None:
        raise SystemExit(status(result))
    raise SystemExit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


class ReportInputError(InputError):
    """Bad input a user can fix (missing run folder, malformed file, ...); the message is one line."""
