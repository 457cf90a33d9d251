"""How the `fixalloc bench` commands print their result: one JSON object with `--json`,
otherwise the figures a line each and then the checks. The exit code says whether every
check passed."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(out: dict[str, Any], *, as_json: bool, skip: tuple[str, ...] = ()) -> int:
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for key, value in out.items():
            if key != "checks" and key not in skip:
                sys.stdout.write(f"  {key:32s} {value}\n")
        for name, ok in out["checks"].items():
            sys.stdout.write(f"  check {name:40s} {'ok' if ok else 'FAILED'}\n")
    return 0 if out["ok"] else 1
