"""`kfn agent`: the in-pod agent (Lambda Runtime API + invoke endpoint); `kfn agent -- CMD...` also runs the runtime."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime-api", help="Runtime API address (default: $AWS_LAMBDA_RUNTIME_API or 127.0.0.1:9001)")
    parser.add_argument("--listen", help="invoke endpoint and probes (default: $KFN_AGENT_LISTEN or 0.0.0.0:8080)")
    parser.add_argument("--function-name", help="default: $AWS_LAMBDA_FUNCTION_NAME")
    parser.add_argument("--timeout", type=int, dest="timeout_seconds", help="seconds, 1..900 (default: $KFN_TIMEOUT_SECONDS or 3)")
    parser.add_argument("--memory", type=int, dest="memory_mb", help="MB, 128..10240 (default: $AWS_LAMBDA_FUNCTION_MEMORY_SIZE or 128)")
    parser.add_argument("--log-format", choices=["Text", "JSON"], help="default: $AWS_LAMBDA_LOG_FORMAT or Text")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="exec mode: after --, the runtime command to supervise (restarted when it exits)")


def run(args: argparse.Namespace) -> int:
    from kfn.agent.config import ConfigError, load_config
    from kfn.agent.server import serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="kfn-agent %(levelname)s %(message)s")
    overrides = {k: getattr(args, k) for k in
                 ("runtime_api", "listen", "function_name", "timeout_seconds", "memory_mb", "log_format")}
    try:
        cfg = load_config(os.environ, overrides)
    except ConfigError as e:
        print(f"kfn agent: {e}", file=sys.stderr)
        return 2
    cmd = list(args.command)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    # The agent sits on every invocation's path: libuv's loop roughly halves its per-request cost.
    import uvloop

    uvloop.run(serve(cfg, cmd))
    return 0
