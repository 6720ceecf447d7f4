"""One way for every entry point to turn user-caused errors into one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from lightning_modules.errors import UserError


def report_user_errors(fn: Callable[[], object], interrupted_hint: str) -> int:
    """Run fn; a user error prints `error: ...` (one line, no traceback) and returns 2."""
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        fn()
    except (UserError, MisconfigurationException, ArgumentError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {interrupted_hint}", file=sys.stderr)
        return 130
    return 0
