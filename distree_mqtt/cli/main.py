"""`distree`: one console script, one subcommand per job. Errors are one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from distree_mqtt import __version__
from distree_mqtt.cli import (
    bench_commands,
    camera_commands,
    config_commands,
    ha_commands,
    model_commands,
    runtime_commands,
)

EXPECTED_ERRORS = (ValueError, RuntimeError, OSError, KeyError, ConnectionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distree",
        description="Run one multi-exit neural network split across edge devices over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"distree-mqtt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    model_commands.register(commands)
    runtime_commands.register(commands)
    camera_commands.register(commands)
    bench_commands.register(commands)
    config_commands.register(commands)
    ha_commands.register(commands)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or error.title
        return f"invalid {error.title} at {where}: {first['msg']}"
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename:
        message = f"{error.filename}: no such file or directory"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("distree: interrupted", file=sys.stderr)
        return 130
    except (ValidationError, *EXPECTED_ERRORS) as error:
        if args.debug:
            raise
        print(f"distree {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
