"""The Typer application and the options every command shares.

Commands live in one module per area (`poll.py`, `classify.py`, ...) and register themselves on `app`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from monitor.config import ConfigError, Settings

app = typer.Typer(help="Watch drug regulators for ATMP approvals.", no_args_is_help=True, add_completion=False)


class Context:
    settings: Settings = Settings.from_env()


@app.callback()
def _global_options(
    config: Path | None = typer.Option(
        None, "--config", envvar="ATMP_MONITOR_CONFIG", help="Config folder (default: ./config)."
    ),
) -> None:
    Context.settings = Settings.from_env(config)


def settings() -> Settings:
    return Context.settings


def fail_on_config_error(exc: ConfigError) -> typer.Exit:
    """Bad config is the one thing that makes a command exit non-zero before doing any work."""
    typer.secho(f"config error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x00, 0x20), 0x7F] if code not in (0x09,)}


def terminal_safe(text: str | None) -> str:
    """Feed text with control characters made visible, so a hostile title cannot drive the terminal."""
    return (text or "").translate(_CONTROL)
