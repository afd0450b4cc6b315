"""The Typer application and the options every command shares.

Commands live in one module per area (`poll.py`, `classify.py`, ...) and register themselves on `app`.
"""

from __future__ import annotations

import json
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
    typer.secho(f"config error: {terminal_safe(str(exc))}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


# C0 and C1 controls drive terminals (ESC and CSI start escape sequences); the bidirectional embeddings,
# overrides and isolates make text display in another order than it is stored.
_DRIVING = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROL = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _DRIVING if code != 0x09}
# json.dumps escapes C0 itself, and only inside strings may a character be escaped (`indent` puts raw newlines
# between values).
_JSON_CONTROL = {code: f"\\u{code:04x}" for code in _DRIVING if code >= 0x7F}


def terminal_safe(text: str | None) -> str:
    """Feed text with control characters made visible, so a hostile title cannot drive the terminal."""
    return (text or "").translate(_CONTROL)


def terminal_json(value: object, *, indent: int | None = None) -> str:
    """JSON readable on a terminal (not ASCII-escaped) yet unable to drive it: the characters that `terminal_safe`
    makes visible are written as \\u escapes, which mean the same to any JSON reader."""
    return json.dumps(value, ensure_ascii=False, indent=indent).translate(_JSON_CONTROL)
