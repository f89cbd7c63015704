"""Command line: run the exporter, `probe --once` for troubleshooting, `check-config FILE`.

Exit codes: 0 healthy or clean stop; 1 a probe failed (probe --once); 2 a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence

from exporter import __version__, logs, webconfig
from exporter.app import Exporter
from exporter.config import Config, ConfigError, flag_table, load
from exporter.logs import event
from exporter.once import run_once

EXIT_CONFIG = 2
log = logging.getLogger("exporter")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Usage mistakes are configuration errors: one line, exit code 2.
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


EPILOG = "commands: 'probe --once' runs every probe once; 'check-config FILE' validates a file."


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="FILE", help="YAML configuration file")
    for flag, setting in flag_table().items():
        envs = " or ".join(f"${name}" for name in setting.meta.envs)
        parser.add_argument(
            f"--{flag}",
            dest=flag,
            default=None,
            metavar="VALUE",
            help=f"{setting.meta.help} Default {setting.meta.shown}; also {envs}. File key: {setting.key}.",
        )


def build_parsers() -> dict[str | None, argparse.ArgumentParser]:
    """One parser per command; None is the exporter itself."""
    prog = "spire-health-exporter"
    run = _Parser(
        prog=prog,
        description="Probes a SPIRE agent's Workload API and serves the results.",
        epilog=EPILOG,
        allow_abbrev=False,
    )
    run.add_argument("--version", action="version", version=f"{prog} {__version__}")
    _common_flags(run)
    probe = _Parser(
        prog=f"{prog} probe",
        description="Run every enabled probe once and print a table.",
        allow_abbrev=False,
    )
    probe.add_argument("--once", action="store_true", required=True, help="run each probe once, then exit")
    _common_flags(probe)
    check = _Parser(
        prog=f"{prog} check-config", description="Validate a configuration file.", allow_abbrev=False
    )
    check.add_argument("file")
    return {None: run, "probe": probe, "check-config": check}


def _flags(args: argparse.Namespace) -> dict[str, str | None]:
    return {flag: getattr(args, flag, None) for flag in flag_table()}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("probe", "check-config") else None
    args = build_parsers()[command].parse_args(argv[1:] if command else argv)
    args.command = command
    try:
        if args.command == "check-config":
            # Judged as the exporter would start with it: the environment applies, and so does
            # the web config the file names.
            checked = load(args.file)
            if checked.web.config_file:
                webconfig.load(checked.web.config_file)
            print(f"{args.file}: configuration is valid")
            return 0
        config = load(args.config_file, flags=_flags(args))
        web_config = config.web.config_file
        security = webconfig.load(web_config) if web_config and args.command is None else None
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(config.log.level, config.log.format)
    if args.command == "probe":
        return run_once(config)
    return serve(config, security)


def serve(config: Config, security: webconfig.WebSecurity | None = None) -> int:
    exporter = Exporter(config)
    try:
        server = exporter.serve(security)
    except OSError as e:
        event(
            log,
            logging.ERROR,
            "cannot listen",
            address=exporter.config.web.listen_address,
            error=str(e),
        )
        return 1
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exporter.start()
    event(log, logging.INFO, "started", version=__version__, endpoint=exporter.config.endpoint)
    http = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="http", daemon=True
    )
    http.start()
    while not stopping.wait(1.0):
        pass
    event(log, logging.INFO, "stopping")
    server.shutdown()
    server.server_close()
    started = time.monotonic()
    exporter.stop()
    event(log, logging.DEBUG, "stopped", seconds=round(time.monotonic() - started, 3))
    return 0
