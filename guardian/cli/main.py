"""`guardian` command line: one module per subcommand in guardian/cli/, each with
`register(subparsers)` that adds its parser and sets `func(args) -> int`."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from guardian import __version__

# REGISTRY:commands — subcommand modules, in the order `guardian --help` lists them.
COMMANDS = [
    "guardian.cli.capture",
    "guardian.cli.doctor",
    "guardian.cli.agent",
    "guardian.cli.traces",
    "guardian.cli.import_cmd",
    "guardian.cli.investigate",
    "guardian.cli.anomalies",
    "guardian.cli.eval",
    "guardian.cli.serve",
    "guardian.cli.hub",
    "guardian.cli.llm",
    "guardian.cli.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardian",
        description="Guardian: eBPF capture of every request, and an AI SRE that explains incidents.",
    )
    parser.add_argument("--version", action="version", version=f"guardian {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML configuration file for every command (default $GUARDIAN_CONFIG; "
                             "keys: docs/configuration.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            importlib.import_module(name).register(sub)
        except (ImportError, AttributeError) as e:
            # one broken subcommand must not take the others down (tests/guardian/test_cli_doctor.py
            # fails on it, so this never ships silently)
            print(f"guardian: command module {name} unavailable: {e}", file=sys.stderr)
    for command in sub.choices.values():
        # `guardian COMMAND --config FILE` works as well as `guardian --config FILE COMMAND`;
        # SUPPRESS keeps an absent subcommand option from hiding the global one.
        if not any("--config" in a.option_strings for a in command._actions):
            command.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                                 help="YAML configuration file (as `guardian --config`)")
    return parser


def use_config(args: argparse.Namespace) -> int:
    """Check the configuration file once and make it the one every part of this process reads."""
    from guardian.config import ConfigError, load

    if args.config:
        os.environ["GUARDIAN_CONFIG"] = str(args.config)
    if not os.environ.get("GUARDIAN_CONFIG"):
        return 0
    try:
        load()
    except (OSError, ConfigError) as e:
        print(f"guardian {args.command}: bad configuration: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if use_config(args):
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
