"""`python tests/engines up|resolve [ENGINE...]`: see the package's docstring."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engines  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(prog="python tests/engines")
    p.add_argument("command", choices=["up", "resolve"])
    p.add_argument("engine", nargs="*", choices=[[], *engines.ENGINES], default=[])
    args = p.parse_args()
    kinds = args.engine or list(engines.ENGINES)
    if not engines.tools_present():
        print("needs java and mvn on PATH", file=sys.stderr)
        return 2
    began = time.monotonic()
    for kind in kinds:
        engines.classpath(engines.ENGINES[kind].maven_project)
    print(f"jars resolved in {time.monotonic() - began:.1f} s (cache {engines.CACHE})")
    if args.command == "resolve":
        return 0
    if engines.kill_leftovers():
        print("killed engine JVMs left over by an earlier run")
    began = time.monotonic()
    running = engines.start_all(kinds)
    print(f"all up in {time.monotonic() - began:.1f} s")
    for e in running:
        print(f"  {e.describe():45} {getattr(e, 'url', None) or e.addr}   log {e.log_path}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while all(e.proc.poll() is None for e in running):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for e in running:
            e.stop()
            shutil.rmtree(e.home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
