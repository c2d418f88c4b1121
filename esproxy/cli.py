"""Command line: ``esproxy -c conf.yml`` runs the roles a config enables; ``esproxy init`` writes one.

Exit codes: 0 done, 1 runtime failure (port taken, file exists), 2 bad usage or bad config.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

from . import __version__

ROLES = {"proxy": "elasticproxy", "replay": "kafka2elastic"}


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esproxy",
        description="Keep Elasticsearch cluster B in sync with cluster A through a proxy and Kafka.",
        epilog="Other commands: esproxy init [--role proxy|replay]; esproxy compare --source URL --target URL;"
        " esproxy repair --source URL --target URL [--dry-run];"
        " esproxy sync list|status|add|delete|pause|resume|stop|approve|reject|skip|waiting -c replay.yml;"
        " esproxy sync copy --source URL --target URL --index PATTERN [--rename T] [--dry-run];"
        " esproxy switchover -c conf.yml [--dry-run]; esproxy failover -c conf.yml;"
        " esproxy dlq list|requeue (-c conf.yml | --brokers B --topic T | --file F);"
        " esproxy profile cpu.profile [--top N]; esproxy config-reference.",
    )
    p.add_argument("-c", "--conf", required=True, help="config file (YAML, the Go original's schema)")
    p.add_argument("--check", action="store_true", help="validate the config, print warnings and exit")
    p.add_argument("--version", action="version", version=f"esproxy {__version__}")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # FDS: a pre-fork worker, started by its master
    return p


def _init(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="esproxy init", description="Write a sample conf.yml and supervisord snippet.")
    p.add_argument("--role", choices=sorted(ROLES), default="proxy", help="which role the sample configures")
    args = p.parse_args(argv)
    here = Path.cwd()
    conf, snippet = here / "conf.yml", here / "supervisord-esproxy.conf"
    existing = [f.name for f in (conf, snippet) if f.exists()]
    if existing:
        print(f"esproxy init: {', '.join(existing)} already exists in {here}; nothing written", file=sys.stderr)
        return 1
    templates = resources.files("esproxy") / "templates"
    conf.write_text((templates / f"{args.role}.yml").read_text(encoding="utf-8"), encoding="utf-8")
    beside = Path(sys.executable).parent / "esproxy"  # the venv's script, even when it is not on PATH
    executable = str(beside) if beside.exists() else shutil.which("esproxy") or f"{sys.executable} -m esproxy"
    snippet.write_text(
        (templates / "supervisord-program.conf")
        .read_text(encoding="utf-8")
        .format(role=args.role, program=ROLES[args.role], esproxy=executable, directory=here),
        encoding="utf-8",
    )
    print(f"wrote {conf.name} ({args.role} role) and {snippet.name}; edit conf.yml, then: esproxy -c conf.yml")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["init"]:
        return _init(argv[1:])
    if argv[:1] == ["compare"]:
        from esproxy.commands.compare import main as compare

        return compare(argv[1:])
    if argv[:1] == ["repair"]:
        from esproxy.commands.repair import main as repair

        return repair(argv[1:])
    if argv[:1] == ["sync"]:
        if argv[1:2] == ["copy"]:
            from esproxy.commands.synccopy import main as sync_copy

            return sync_copy(argv[2:])
        from esproxy.commands.syncctl import main as sync

        return sync(argv[1:])
    if argv[:1] in (["switchover"], ["failover"]):
        from esproxy.commands.switchover import main as switch

        return switch(argv[0], argv[1:])
    if argv[:1] == ["dlq"]:
        from esproxy.commands.dlq import main as dlq

        return dlq(argv[1:])
    if argv[:1] == ["profile"]:
        from esproxy.admin.profiling import main as profile_main

        return profile_main(argv[1:])
    if argv[:1] == ["config-reference"]:
        from esproxy.core.config import reference_markdown

        print(reference_markdown())
        return 0
    args = _run_parser().parse_args(argv)

    from esproxy.configfile import load
    from esproxy.core.config import ConfigError

    try:
        cfg = load(args.conf)
    except ConfigError as e:
        return _config_error(e)
    if args.check:
        from esproxy.clients.tls import check_contexts  # imports ssl: only here, where no monkey-patching follows

        try:
            check_contexts(cfg)
        except ConfigError as e:
            return _config_error(e)
        for warning in cfg.warnings:
            print(f"esproxy: warning: {warning}", file=sys.stderr)
        print(f"esproxy: {args.conf} is valid")
        return 0

    from gevent import monkey

    monkey.patch_all()

    from esproxy.core import logs

    from .roles import Roles

    logs.setup(cfg.logLevel)
    if args.worker:
        from esproxy.proxy.worker import run

        return run(cfg, args.worker)
    try:
        roles = Roles(cfg, args.conf)
    except ConfigError as e:  # the sync rules' state file (follow-state.json) does not fit the config
        return _config_error(e)
    return roles.run()


def _config_error(e: Exception) -> int:
    """Exit 2 with the error, a line per problem (one per unresolved ${ENV} or file: reference), no secret in it."""
    from esproxy.core.secretrefs import mask

    for line in str(e).splitlines():
        print(f"esproxy: config error: {mask(line)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    sys.exit(main())
