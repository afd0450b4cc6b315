"""Command-line entry point: `atmp-monitor`."""

from monitor.cli import classify as _classify  # noqa: F401
from monitor.cli import notify as _notify  # noqa: F401
from monitor.cli import poll as _poll  # noqa: F401  (registers commands)
from monitor.cli import service as _service  # noqa: F401
from monitor.cli.app import app


def main() -> None:
    app()
