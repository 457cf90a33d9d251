"""Mutation testing with mutmut over the modules whose mistakes cost most.

    python scripts/mutants.py TARGET [--only PATTERN ...] [--fresh] [--max-children N]

TARGET is one of the names in TARGETS (or `all`). Each target runs in its own copy of
the working tree under ~/.cache/fixalloc/mutants/TARGET (mutmut writes a `mutants/`
folder next to the code and remembers results there, so a second run only re-tests
what changed; --fresh starts over). --only restricts the run and the report to mutants
whose names match a pattern (fnmatch, e.g. 'engine.split.*'; a name is module.function).
At the end it prints the mutants per status and module and every survivor grouped by
function, and writes the same as JSON to ~/.cache/fixalloc/mutants/TARGET/summary.json.

Why a copy: mutmut instruments a copy of the code, and the integration tests start the
daemon with `python -m gateway` from the tree they live in; in the copy that is the
instrumented code, so a mutant is active in the daemon's process too.
Why these tests: mutmut runs, for each mutant, only the tests that called the mutated
function when it collected its statistics in the test process. The daemon subprocesses
of the SIGKILL tests are invisible to that, so the recovery target relies on the
in-process crash tests (tests/integration/test_recovery_in_process.py). The property
tests call every engine function and take ~25 s, so each engine mutant would pay for
them: they are left out, and the engine target counts only what the unit tests kill.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "fixalloc" / "mutants"

TARGETS: dict[str, dict[str, list[str]]] = {
    "engine": {
        "source_paths": ["engine/"],
        "only": [],
        "tests": ["tests/unit/engine", "tests/unit/refdata/test_engine_cli.py"],
    },
    # mutmut's copy of the code holds only what source_paths name, so a target inside the
    # gateway package mutates the whole package (the others would not import) and runs
    # only the mutants of its own modules.
    "recovery": {
        "source_paths": ["gateway/"],
        "only": ["gateway.recovery.*", "gateway.fix.store_index.*"],
        "tests": ["tests/integration/test_recovery_in_process.py",
                  "tests/integration/test_crash_recovery.py"],
    },
    "dedupe": {
        "source_paths": ["gateway/"],
        "only": ["gateway.persistence.store.*", "gateway.fix.oms_orders.*"],
        "tests": ["tests/contract/test_store.py", "tests/integration/test_dedupe_dates.py",
                  "tests/integration/test_fill_to_allocation.py",
                  "tests/integration/test_order_limits.py"],
    },
}

_LINE = re.compile(r"^\s*(?P<name>[\w.]+__mutmut_\d+):\s*(?P<status>[\w ]+?)\s*$")


def _copy(target: str, fresh: bool) -> Path:
    work = CACHE / target
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns(".venv", ".git", "mutants", "state", "__pycache__",
                                    ".hypothesis", ".mypy_cache", ".ruff_cache",
                                    ".pytest_cache")
    for item in ("engine", "gateway", "tests", "config", "fix_specs", "pyproject.toml"):
        src, dst = ROOT / item, work / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    spec = TARGETS[target]
    pyproject = (work / "pyproject.toml").read_text(encoding="utf-8")
    pyproject = pyproject.split("\n[tool.mutmut]")[0] + "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(spec['source_paths'])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(spec['tests'])}",
        'pytest_add_cli_args = ["-p", "no:randomly", "-q", "-x", "-o", "addopts="]',
        # A mutant that loops forever is killed after 3x the selected tests' own time + 5 s
        # (mutmut's default of 15x spends hours on the split's while-loops).
        "timeout_multiplier = 3.0",
        "timeout_constant = 5.0",
        "also_copy = [\"config\", \"fix_specs\"]",
        "",
    ])
    (work / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return work


def _results(work: Path) -> dict[str, str]:
    out = subprocess.run([str(Path(sys.executable).with_name("mutmut")), "results", "--all",  # noqa: S603 - our venv's mutmut
                          "true"], cwd=work, capture_output=True, text=True, check=False)
    found = {}
    for line in out.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            found[match["name"]] = match["status"]
    return found


def run(target: str, fresh: bool, max_children: int, only: list[str]) -> dict[str, object]:
    work = _copy(target, fresh)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    subprocess.run([mutmut, "run", "--max-children", str(max_children), *only],  # noqa: S603
                   cwd=work, check=False)
    results = {name: status for name, status in _results(work).items()
               if not only or any(fnmatch.fnmatch(name, pattern) for pattern in only)}
    by_status: dict[str, int] = {}
    by_module: dict[str, dict[str, int]] = {}
    survivors: dict[str, list[str]] = {}
    for name, status in sorted(results.items()):
        by_status[status] = by_status.get(status, 0) + 1
        function = name.rsplit("__mutmut_", 1)[0]
        module = by_module.setdefault(function.rsplit(".", 1)[0], {})
        module[status] = module.get(status, 0) + 1
        if status == "survived":
            survivors.setdefault(function, []).append(name)
    summary = {"target": target, "only": only, "mutants": len(results),
               "by_status": by_status, "by_module": by_module,
               "survivors_by_function": {k: len(v) for k, v in survivors.items()},
               "survivors": survivors}
    (work / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="mutant names to run and report (fnmatch), e.g. 'engine.split.*'")
    args = parser.parse_args()
    for target in TARGETS if args.target == "all" else [args.target]:
        summary = run(target, args.fresh, args.max_children,
                      args.only or TARGETS[target]["only"])
        sys.stdout.write(f"\n{target}: {summary['mutants']} mutants {summary['by_status']}\n")
        for module, counts in sorted(summary["by_module"].items()):  # type: ignore[attr-defined]
            sys.stdout.write(f"  {module:32s} {counts}\n")
        for function, count in sorted(summary["survivors_by_function"].items()):  # type: ignore[attr-defined]
            sys.stdout.write(f"  survived {count:3d}  {function}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
