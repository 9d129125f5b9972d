"""User-facing errors: one clear line and a non-zero exit, never a traceback."""
import argparse
import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (paths, options, files) that they can fix."""


class ArgumentParser(argparse.ArgumentParser):
    """A wrong command line is a UserError: one 'error: ...' line, exit 1 (argparse's own: usage, exit 2)."""

    def error(self, message: str):
        raise UserError(message)


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's main; a UserError becomes 'error: ...' on stderr and exit 1."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
