"""`flashgate-device`: the reference device agent as a process.

    flashgate-device --config device.yaml [--cycles N] [--log-level INFO]

It boots (recovering from whatever step a power cut interrupted), then polls every pollSeconds,
forever or N times. Exit codes: 0 done (or SIGTERM/SIGINT), 2 a bad command line or
configuration. FLASHGATE_FAILPOINTS=<step> (flashgate.device.agent.CRASH_POINTS) kills it at that
step of an install, for the crash tests.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from flashgate.device.agent import Agent
from flashgate.device.config import ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashgate-device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the device's configuration")
    parser.add_argument("--cycles", type=int, default=None, metavar="N",
                        help="poll N times, then exit (default: forever)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"flashgate-device: {exc}", file=sys.stderr)
        return 2
    agent = Agent(settings)
    agent.boot()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run(args.cycles))
    return 0
