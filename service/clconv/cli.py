"""Command-line interface: ``clconv serve`` starts the HTTP server and ``clconv tune`` fills
the tuning database; the client subcommands talk to a running server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import FrameType

from clconv import __version__
from clconv.cli_client import CLIENT_COMMANDS, add_client_commands, run_client_command
from clconv.cli_tune import add_tune_command, run_tune
from clconv.settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clconv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"clconv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument(
        "--device",
        default=None,
        help="default device id such as intel:0 or pocl:0 (overrides CLCONV_DEVICE)",
    )
    serve.add_argument(
        "--log-level",
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (overrides CLCONV_LOG_LEVEL; default INFO)",
    )
    add_tune_command(commands)
    add_client_commands(commands)
    return parser


def _configure_logging(level: str, log_format: str) -> None:
    """Log to stderr as text, or as one JSON object per line with ``CLCONV_LOG_FORMAT=json``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from clconv.api.observability import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def log_exposure(settings: Settings, logger: logging.Logger) -> None:
    """Warn loudly when a non-loopback address is bound without API keys; never log a key."""
    if settings.host not in LOOPBACK_HOSTS and not settings.api_keys:
        logger.warning(
            "SECURITY WARNING: binding %s, which is reachable from other machines, and "
            "CLCONV_API_KEYS is not set, so anyone who can reach this port can run work on "
            "its devices; set CLCONV_API_KEYS or bind 127.0.0.1",
            settings.host,
        )
    if settings.api_keys:
        logger.info("API keys required: %d configured", len(settings.api_keys))


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from clconv.api.app import create_app
    from clconv.engine import Engine
    from clconv.errors import ClconvError

    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"clconv: invalid setting: {error}", file=sys.stderr)
        return 2
    overrides = {"host": args.host, "port": args.port}
    if args.device:
        overrides["device"] = args.device
    if args.log_level:
        overrides["log_level"] = args.log_level.upper()
    settings = Settings(**{**settings.__dict__, **overrides})
    _configure_logging(settings.log_level, settings.log_format)
    logger = logging.getLogger("clconv")
    log_exposure(settings, logger)
    logger.info("serving on http://%s:%d (pid %d)", settings.host, settings.port, os.getpid())
    # Discover devices before binding, so a bad CLCONV_DEVICE ends the process with a message.
    engine = Engine(settings)
    try:
        engine.start()
    except ClconvError as error:
        logger.error("start-up failed: %s", error.message)
        return 2
    app = create_app(settings, engine)
    # With JSON logs, uvicorn's own loggers are left unconfigured so that their lines reach
    # the root handler and come out as JSON too.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )

    class ReadinessAwareServer(uvicorn.Server):
        """Turns /readyz not-ready at the first SIGTERM or SIGINT, while in-flight requests
        drain; uvicorn runs the lifespan shutdown only after they have."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not engine.stopping:
                logger.info("signal %d: not ready from now on; draining requests", sig)
            engine.begin_shutdown()
            super().handle_exit(sig, frame)

    ReadinessAwareServer(config).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "tune":
        return run_tune(args)
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    return 2
