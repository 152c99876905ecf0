"""``make bench``: run every benchmark module of this folder in turn (``python -m bench [NAME ...]``).

Each module prints its own numbers; docs/benchmarks.md records them with the command for each.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


#: Exploratory screenings and multi-hour runs, only when named (``python -m bench prompt_variants``).
SCREENINGS = {"prompt_variants", "response_lomo"}


def main(names: list[str]) -> int:
    here = Path(__file__).resolve().parent
    modules = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    chosen = [m for m in modules if (not names and m not in SCREENINGS) or any(n in m for n in names)]
    failed = []
    for name in chosen:
        mod = importlib.import_module(f"bench.{name}")
        if not hasattr(mod, "main"):
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        t0 = time.perf_counter()
        sys.argv = [f"bench.{name}"]  # each benchmark runs with its own defaults
        try:
            mod.main([]) if mod.main.__code__.co_argcount else mod.main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
        except Exception as exc:  # report and go on with the other benchmarks
            print(f"bench.{name} failed: {exc!r}", flush=True)
            failed.append(name)
        print(f"=== bench.{name}: {time.perf_counter() - t0:.0f} s ===", flush=True)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
