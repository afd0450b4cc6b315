"""Commands to classify announcements from the command line and to measure the classifier: classify, eval.

`classify` is a contract other tools script against: one JSON object out per line in, in order, with exactly
the fields of `Classification.as_dict`, or an `error` object for a line that cannot be read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.engine import make_url

from monitor.catalogue import Catalogue, load_baseline
from monitor.classify import classify
from monitor.cli.app import app, fail_on_config_error, settings, terminal_json, terminal_safe
from monitor.config import ConfigError
from monitor.evaluate import FIELDS, CorpusError, Evaluation, evaluate, read_corpus
from monitor.models import Product
from monitor.record import learned_products
from monitor.ruleset import RuleSet, load_rules
from monitor.store import open_store

_OPTIONAL_FIELDS = ("summary", "link", "published", "regulator")

RULES_OPTION = typer.Option(None, "--rules", help="Rules folder or file (default: the shipped monitor/rules/).")


class LineError(ValueError):
    """One input line that cannot be classified; the other lines still are."""


def _baseline() -> list[Product]:
    """The baseline file alone: what `eval` measures against, so its figures do not depend on a store."""
    return load_baseline(settings().config_dir / "baseline.yaml")


def _configured_catalogue() -> list[Product]:
    """What `classify` judges against: the baseline plus what the store has learned, if a store exists yet."""
    current = settings()
    products = _baseline()
    url = make_url(current.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return products
    store = open_store(current.database_url)
    try:
        with store.transaction() as session:
            return products + learned_products(session)
    finally:
        store.dispose()


def _rules(path: Path | None) -> RuleSet | None:
    return load_rules(path) if path is not None else None


@app.command("classify")
def classify_command(
    file: str | None = typer.Argument(None, metavar="FILE", help="JSON Lines to classify; '-' or none: stdin."),
    rules_path: Path | None = RULES_OPTION,
) -> None:
    """Classify announcements read as JSON Lines, one JSON object out per line in.

    Each input line is an object with `title` (required) and optionally
    `summary`, `link`, `published` and `regulator`. Each output line has
    is_atmp, modality, eu_category, submodality, event, products,
    confidence and reasons.

    A line that cannot be classified (bad JSON, not an object, no title,
    and also a blank line, so that output line N always answers input
    line N) gives {"error": "line N: ..."} instead.

    The catalogue is read, never changed. Exit status: 0 if every line
    was classified, 1 otherwise.
    """
    try:
        rules = _rules(rules_path)
        catalogue = Catalogue(_configured_catalogue())
    except ConfigError as exc:
        raise fail_on_config_error(exc) from None
    failed = False
    with _input_lines(file) as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                fields = _parse_line(number, raw)
            except LineError as exc:
                failed = True
                _write({"error": str(exc)})
                continue
            result = classify(fields["title"], fields.get("summary") or "", regulator=fields.get("regulator"),
                              catalogue=catalogue, rules=rules)
            _write(result.as_dict())
    if failed:
        raise typer.Exit(code=1)


@contextmanager
def _input_lines(file: str | None) -> Iterator[Iterable[bytes]]:
    """The named file, or standard input for none or '-', as bytes: a line that is not UTF-8 is one bad line."""
    if file in (None, "-"):
        yield sys.stdin.buffer
        return
    try:
        with Path(file).open("rb") as handle:
            yield handle
    except OSError as exc:
        typer.secho(f"cannot read {terminal_safe(file)}: {exc.strerror}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None


def _parse_line(number: int, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise LineError(f"line {number}: not UTF-8 text") from None
    if not text.strip():
        raise LineError(f"line {number}: blank line")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"line {number}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise LineError(f"line {number}: expected a JSON object")
    title = value.get("title")
    if not isinstance(title, str) or not title.strip():
        raise LineError(f"line {number}: `title` is required and must be a non-empty string")
    for name in _OPTIONAL_FIELDS:
        if value.get(name) is not None and not isinstance(value[name], str):
            raise LineError(f"line {number}: `{name}` must be a string")
    return value


def _write(value: dict[str, Any]) -> None:
    sys.stdout.write(terminal_json(value) + "\n")


# ------------------------------------------------------------------------------------------------ eval

@app.command("eval")
def eval_command(
    file: Path = typer.Argument(..., help="Labelled corpus, JSON Lines (see tests/data/corpus.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures and misses as one JSON object."),
    rules_path: Path | None = RULES_OPTION,
) -> None:
    """Measure the classifier on a labelled corpus: precision, recall, misses.

    Prints is_atmp precision and recall, the accuracy of modality,
    eu_category, submodality and event over the items labelled ATMP,
    confusion tables and every miss.

    Each item is classified against the configured baseline as it stood
    on the item's `published` day (products approved strictly before it),
    so that a first approval is a new product on its own day.
    """
    try:
        rules = _rules(rules_path)
        baseline = _baseline()
    except ConfigError as exc:
        raise fail_on_config_error(exc) from None
    try:
        items = read_corpus(file)
    except CorpusError as exc:
        typer.secho(f"corpus error: {terminal_safe(str(exc))}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    result = evaluate(items, baseline, rules=rules)
    if as_json:
        typer.echo(terminal_json(result.as_dict(), indent=2))
    else:
        typer.echo("\n".join(report_lines(result, file)))


def report_lines(result: Evaluation, corpus: Path) -> list[str]:
    """The evaluation as a person reads it; titles come from a file and are made terminal-safe."""
    lines = [
        f"corpus {terminal_safe(str(corpus))}: {result.items} items, {result.labelled_atmp} labelled ATMP; "
        "each classified against the baseline as of its publication day",
        "",
        f"is_atmp    precision {result.precision:.3f} "
        f"({result.true_positive}/{result.true_positive + result.false_positive})   "
        f"recall {result.recall:.3f} ({result.true_positive}/{result.labelled_atmp})",
        f"ATMP approvals classified as approvals: {result.approval_recall:.3f} "
        f"({result.approvals_found}/{result.approvals})",
        "",
        f"field accuracy over the {result.labelled_atmp} items labelled ATMP:",
        *(f"  {name:<12} {result.accuracy(name):.3f} ({result.field_correct[name]}/{result.labelled_atmp})"
          for name in FIELDS),
        "",
        "is_atmp confusion      got ATMP   got not",
        f"  labelled ATMP      {result.true_positive:>9} {result.false_negative:>9}",
        f"  labelled not       {result.false_positive:>9} {result.true_negative:>9}",
        "",
        *_confusion_matrix(result.modality_confusion),
        "",
        f"misses ({len(result.misses)}):",
        *(f"  line {miss.line:>3}  {miss.field:<12} expected {_show(miss.expected):<27} got {_show(miss.got):<27}"
          f" {terminal_safe(miss.title)}" for miss in result.misses),
    ]
    return lines


def _show(value: Any) -> str:
    """A label as JSON spells it; labels come from the corpus file, so they are made terminal-safe like titles."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else terminal_safe(str(value))


def _confusion_matrix(confusion: dict[tuple[str | None, str | None], int]) -> list[str]:
    if not confusion:
        return ["modality confusion: no items labelled ATMP"]
    labels = sorted({label for pair in confusion for label in pair}, key=lambda label: (label is None, label or ""))
    width = max([len(_show(label)) for label in labels] + [8])
    lines = ["modality confusion (rows: labelled, columns: got; items labelled ATMP)",
             " " * (width + 2) + " ".join(f"{_abbreviation(label):>6}" for label in labels)]
    for expected in labels:
        cells = " ".join(f"{confusion.get((expected, got), 0):>6}" for got in labels)
        lines.append(f"  {_show(expected):<{width}}{cells}")
    lines.append("  columns: " + ", ".join(f"{_abbreviation(label)} = {_show(label)}" for label in labels))
    return lines


def _abbreviation(label: str | None) -> str:
    return "null" if label is None else terminal_safe("".join(part[:1] for part in label.split("_")).upper())
