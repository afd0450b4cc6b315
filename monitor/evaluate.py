"""Measuring the classifier against a labelled corpus of real announcements.

Each corpus item is classified against the catalogue *as it stood on the item's publication day*: the baseline
restricted to products approved strictly before that day. The corpus is made of announcements up to 2023 about
products that are in the 2023 baseline, so against the full baseline every first approval would look like news
about a known product; on the day itself, Kymriah's 2017 approval was a new product. An item without a date is
classified against the whole baseline.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from monitor.catalogue import Catalogue
from monitor.classify import classify
from monitor.models import Product
from monitor.ruleset import RuleSet

FIELDS = ("modality", "eu_category", "submodality", "event")
APPROVAL_EVENTS = ("new_product", "new_indication")
_TEXT_FIELDS = ("title", "summary", "regulator", "published", "link", "note")


class CorpusError(ValueError):
    """A corpus line cannot be used; names the file and the line, because a corpus is edited by hand."""

    def __init__(self, path: Path | str, line: int, message: str):
        self.path = Path(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class CorpusItem:
    line: int
    title: str
    summary: str
    regulator: str | None
    published: date | None
    expected: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Miss:
    line: int
    title: str
    field: str
    expected: Any
    got: Any


@dataclass(frozen=True)
class Evaluation:
    """Counts from one run over a corpus; the rates are derived so that they always agree with the counts."""

    items: int
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int
    approvals: int
    approvals_found: int
    field_correct: dict[str, int]
    modality_confusion: dict[tuple[str | None, str | None], int]
    misses: list[Miss] = field(default_factory=list)

    @property
    def labelled_atmp(self) -> int:
        """The items the field accuracies are measured over: those labelled as ATMPs."""
        return self.true_positive + self.false_negative

    @property
    def precision(self) -> float:
        found = self.true_positive + self.false_positive
        return self.true_positive / found if found else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive / self.labelled_atmp if self.labelled_atmp else 1.0

    @property
    def approval_recall(self) -> float:
        """ATMP approvals classified as ATMP approvals (new_product or new_indication): the alerts that matter."""
        return self.approvals_found / self.approvals if self.approvals else 1.0

    def accuracy(self, name: str) -> float:
        return self.field_correct[name] / self.labelled_atmp if self.labelled_atmp else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "is_atmp": {
                "precision": self.precision, "recall": self.recall, "true_positive": self.true_positive,
                "false_positive": self.false_positive, "false_negative": self.false_negative,
                "true_negative": self.true_negative,
            },
            "approvals": {"recall": self.approval_recall, "found": self.approvals_found, "total": self.approvals},
            "fields": {
                "measured_over": "items labelled is_atmp true",
                "items": self.labelled_atmp,
                **{name: {"accuracy": self.accuracy(name), "correct": self.field_correct[name]} for name in FIELDS},
            },
            "modality_confusion": [
                {"expected": expected, "got": got, "count": count}
                for (expected, got), count in sorted(self.modality_confusion.items(), key=lambda kv: str(kv[0]))
            ],
            "misses": [asdict(miss) for miss in self.misses],
        }


# ------------------------------------------------------------------------------------------------ corpus

def read_corpus(path: Path) -> list[CorpusItem]:
    """The items of a JSON Lines corpus; blank lines are skipped, anything else malformed stops the run."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(path, 0, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CorpusError(path, 0, "not UTF-8 text") from None
    return [_item(path, number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _item(path: Path, number: int, line: str) -> CorpusItem:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(path, number, f"not valid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise CorpusError(path, number, "expected a JSON object")
    unknown = sorted(set(raw) - {*_TEXT_FIELDS, "expected"})
    if unknown:
        raise CorpusError(path, number, f"unknown field(s): {', '.join(unknown)}")
    for name in _TEXT_FIELDS:
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise CorpusError(path, number, f"`{name}` must be a string")
    if not (raw.get("title") or "").strip():
        raise CorpusError(path, number, "`title` is required")
    return CorpusItem(
        line=number,
        title=raw["title"],
        summary=raw.get("summary") or "",
        regulator=raw.get("regulator"),
        published=_published(path, number, raw.get("published")),
        expected=_expected(path, number, raw.get("expected")),
    )


def _published(path: Path, number: int, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise CorpusError(path, number, f"`published` is not a YYYY-MM-DD date: {value!r}") from None


def _expected(path: Path, number: int, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("is_atmp"), bool):
        raise CorpusError(path, number, "`expected` must be an object with a boolean `is_atmp`")
    unknown = sorted(set(value) - {"is_atmp", *FIELDS})
    if unknown:
        raise CorpusError(path, number, f"unknown expected field(s): {', '.join(unknown)}")
    wrong = [name for name in FIELDS if value.get(name) is not None and not isinstance(value[name], str)]
    if wrong:
        raise CorpusError(path, number, f"expected {', '.join(wrong)} must be a string or null")
    if not value["is_atmp"] and any(value.get(name) is not None for name in FIELDS):
        raise CorpusError(path, number, "an item labelled not ATMP has every other expected field null")
    return {"is_atmp": value["is_atmp"], **{name: value.get(name) for name in FIELDS}}


# ------------------------------------------------------------------------------------------------ running

class _CatalogueAsOf:
    """Catalogues of the baseline as of given days, built once per distinct set of products."""

    def __init__(self, baseline: Sequence[Product]):
        self._baseline = list(baseline)
        self._built: dict[tuple[int, ...], Catalogue] = {}

    def on(self, day: date | None) -> Catalogue:
        included = tuple(
            position for position, product in enumerate(self._baseline)
            if day is None or product.approval_date is None or product.approval_date < day
        )
        if included not in self._built:
            self._built[included] = Catalogue(self._baseline[position] for position in included)
        return self._built[included]


def catalogue_as_of(baseline: Iterable[Product], day: date | None) -> Catalogue:
    """The baseline restricted to products approved strictly before `day` (all of it when `day` is None)."""
    return _CatalogueAsOf(list(baseline)).on(day)


def evaluate(items: Iterable[CorpusItem], baseline: Sequence[Product], *, rules: RuleSet | None = None) -> Evaluation:
    catalogues = _CatalogueAsOf(baseline)
    counts: Counter[str] = Counter()
    field_correct: Counter[str] = Counter({name: 0 for name in FIELDS})
    confusion: Counter[tuple[str | None, str | None]] = Counter()
    misses: list[Miss] = []
    total = 0
    for item in items:
        total += 1
        got = classify(item.title, item.summary, regulator=item.regulator, catalogue=catalogues.on(item.published),
                       rules=rules).as_dict()
        expected = item.expected
        counts[_outcome(expected["is_atmp"], got["is_atmp"])] += 1
        if expected["is_atmp"] != got["is_atmp"]:
            misses.append(Miss(item.line, item.title, "is_atmp", expected["is_atmp"], got["is_atmp"]))
        if not expected["is_atmp"]:
            continue
        confusion[(expected["modality"], got["modality"])] += 1
        if expected["event"] in APPROVAL_EVENTS:
            counts["approvals"] += 1
            counts["approvals_found"] += got["is_atmp"] and got["event"] in APPROVAL_EVENTS
        for name in FIELDS:
            if expected[name] == got[name]:
                field_correct[name] += 1
            else:
                misses.append(Miss(item.line, item.title, name, expected[name], got[name]))
    return Evaluation(
        items=total,
        true_positive=counts["tp"], false_positive=counts["fp"], false_negative=counts["fn"],
        true_negative=counts["tn"], approvals=counts["approvals"], approvals_found=counts["approvals_found"],
        field_correct=dict(field_correct), modality_confusion=dict(confusion), misses=misses,
    )


def _outcome(expected: bool, got: bool) -> str:
    if expected:
        return "tp" if got else "fn"
    return "fp" if got else "tn"
