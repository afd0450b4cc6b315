"""Loading the classification rules (monitor/rules/*.yaml) into compiled, checked form.

The rules are data so that a regulatory-affairs reader can check and extend them without reading code; this
module is the only place that knows their file format. Every problem is reported as a ConfigError naming the
file, the line and the rule, before any entry is classified, because a silently ignored rule is a missed alert.

All files of the folder are read in name order and their sections merged: lists (keywords, exclusions,
stems, ...) are concatenated, so an expert can add `local.yaml` beside the shipped files; a mapping or a value
(modalities, precedence, decision, ...) must be given by exactly one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.config import ConfigError, describe_validation_error, read_yaml, strip_lines

DEFAULT_RULES_DIR = Path(__file__).resolve().parent / "rules"

LIST_SECTIONS = ("vector_stems", "cell_stems", "gene_words", "cell_infixes", "not_names", "not_trade_names",
                 "keywords", "exclusions", "events")
SINGLE_SECTIONS = ("modalities", "precedence", "decision", "name_kinds", "indication")
NAME_KINDS = ("gene_vector", "gene_cells", "cells")
EVENT_GROUPS = ("safety", "guidance", "recommendation", "approval")

_SEPARATOR = r"[\s\-]+"
# An FDA four-letter suffix ("-rzyl") and/or a one-letter one ("sipuleucel-T", "remestemcel-L-rknd").
_NAME_SUFFIX = r"((?:-[a-z](?![a-z]))?(?:-[a-z]{4}(?![a-z]))?)"


# --------------------------------------------------------------------------------------------- compiled rules

@dataclass(frozen=True, slots=True)
class Modality:
    name: str
    eu_category: str
    says: str
    submodalities: frozenset[str]


@dataclass(frozen=True, slots=True)
class Stem:
    """An INN ending (or infix) and what it tells about the product."""

    stem: str
    says: str
    modality: str | None = None
    submodality: str | None = None


@dataclass(frozen=True, slots=True)
class NameKind:
    weight: int
    says: str
    modality: str | None


@dataclass(frozen=True, slots=True)
class KeywordRule:
    id: str
    says: str
    pattern: re.Pattern[str]
    weight: int
    vote: int
    modality: str | None
    submodality: str | None
    decisive: bool


@dataclass(frozen=True, slots=True)
class ExclusionRule:
    id: str
    says: str
    pattern: re.Pattern[str]
    endings: tuple[str, ...]
    weight: int


@dataclass(frozen=True, slots=True)
class EventRule:
    id: str
    event: str
    says: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class RuleSet:
    modalities: dict[str, Modality]
    precedence: tuple[str, ...]
    atmp_threshold: int
    catalogue_weight: int
    broad_scope: frozenset[str]
    vector_stems: tuple[Stem, ...]
    cell_stems: tuple[Stem, ...]
    gene_words: tuple[Stem, ...]
    cell_infixes: tuple[Stem, ...]
    name_kinds: dict[str, NameKind]
    not_names: frozenset[str]
    not_trade_names: frozenset[str]
    keywords: tuple[KeywordRule, ...]
    exclusions: tuple[ExclusionRule, ...]
    events: tuple[EventRule, ...]
    indication: EventRule
    gene_name_pattern: re.Pattern[str]
    cell_name_pattern: re.Pattern[str]

    def rule_ids(self) -> set[str]:
        """Every rule by the id tests and `Analysis.fired` use, so that each can be shown to be exercised."""
        return {
            *(f"keyword:{rule.id}" for rule in self.keywords),
            *(f"exclusion:{rule.id}" for rule in self.exclusions),
            *(f"event:{rule.id}" for rule in self.events),
            f"indication:{self.indication.id}",
            *(f"vector_stem:{stem.stem}" for stem in self.vector_stems),
            *(f"cell_stem:{stem.stem}" for stem in self.cell_stems),
            *(f"gene_word:{stem.stem}" for stem in self.gene_words),
            *(f"cell_infix:{stem.stem}" for stem in self.cell_infixes),
        }


# ------------------------------------------------------------------------------------------- file format

def _check_phrase(phrase: str) -> str:
    words = [word for word in re.split(_SEPARATOR, phrase.strip()) if word]
    if not words:
        raise ValueError("empty phrase")
    for word in words:
        if word == "*" or "*" in word[:-1]:
            raise ValueError(f"{phrase!r}: '*' may only end a word")
    return phrase


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _PhraseSpec(_Spec):
    phrases: list[str] = Field(default_factory=list)
    acronyms: list[str] = Field(default_factory=list)

    @field_validator("phrases", "acronyms")
    @classmethod
    def _valid_phrases(cls, phrases: list[str]) -> list[str]:
        return [_check_phrase(phrase) for phrase in phrases]


class KeywordSpec(_PhraseSpec):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    says: str = Field(min_length=1)
    weight: int = Field(ge=0, le=10)
    vote: int | None = Field(default=None, ge=0, le=10)
    modality: str | None = None
    submodality: str | None = None
    decisive: bool = False


class ExclusionSpec(_PhraseSpec):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    says: str = Field(min_length=1)
    endings: list[str] = Field(default_factory=list)
    weight: int = Field(ge=1, le=10)

    @field_validator("endings")
    @classmethod
    def _lower_case_endings(cls, endings: list[str]) -> list[str]:
        for ending in endings:
            if not re.fullmatch(r"[a-z]{2,}", ending):
                raise ValueError(f"{ending!r}: an ending is two or more lower-case letters")
        return endings


class EventSpec(_PhraseSpec):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    event: Literal[EVENT_GROUPS]
    says: str = Field(min_length=1)


class IndicationSpec(_PhraseSpec):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    says: str = Field(min_length=1)


class StemSpec(_Spec):
    stem: str = Field(pattern=r"^[a-z]{2,}$")
    says: str = Field(min_length=1)
    modality: str | None = None
    submodality: str | None = None


class GeneWordSpec(_Spec):
    ending: str = Field(pattern=r"^[a-z]{3,}gene$")
    says: str = Field(min_length=1)
    submodality: str


class InfixSpec(_Spec):
    infix: str = Field(pattern=r"^[a-z]{2,}$")
    says: str = Field(min_length=1)
    modality: str


class NameKindSpec(_Spec):
    weight: int = Field(ge=0, le=10)
    says: str = Field(min_length=1)
    modality: str | None = None


class ModalitySpec(_Spec):
    eu_category: Literal["GTMP", "sCTMP", "TEP", "cATMP"]
    says: str = Field(min_length=1)
    submodalities: list[str] = Field(min_length=1)


class DecisionSpec(_Spec):
    atmp_threshold: int = Field(ge=1, le=50)
    catalogue_weight: int = Field(ge=0, le=10)
    broad_scope: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------- loading

@dataclass(frozen=True, slots=True)
class _Item:
    """One raw value from a rules file, with where it came from for error messages."""

    path: Path
    line: int | None
    value: Any


def load_rules(path: Path | None = None) -> RuleSet:
    """The rules in a folder of YAML files (default: the shipped monitor/rules/), or in a single file."""
    folder = path or DEFAULT_RULES_DIR
    if folder.is_dir():
        files = sorted(folder.glob("*.yaml"))
        if not files:
            raise ConfigError(folder, "no *.yaml rule files in this folder")
    else:
        files = [folder]
    lists: dict[str, list[_Item]] = {name: [] for name in LIST_SECTIONS}
    singles: dict[str, _Item] = {}
    for file in files:
        _read_file(file, lists, singles)
    missing = [name for name in SINGLE_SECTIONS if name not in singles]
    missing += [name for name in ("vector_stems", "cell_stems", "keywords", "exclusions", "events") if not lists[name]]
    if missing:
        raise ConfigError(folder, f"rules incomplete, missing section(s): {', '.join(missing)}")
    return _build(lists, singles)


def _read_file(path: Path, lists: dict[str, list[_Item]], singles: dict[str, _Item]) -> None:
    data = read_yaml(path)
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(path, "a rules file is a mapping of sections (keywords:, exclusions:, ...)")
    for key, value in data.items():
        if key == "__line__":
            continue
        line = data["__line__"] if not isinstance(value, dict) else value.get("__line__")
        if key in LIST_SECTIONS:
            if not isinstance(value, list):
                raise ConfigError(path, f"`{key}` must be a list", line=line)
            lists[key].extend(_Item(path, item.get("__line__", line) if isinstance(item, dict) else line, item)
                              for item in value)
        elif key in SINGLE_SECTIONS:
            if key in singles:
                first = singles[key]
                raise ConfigError(path, f"`{key}` is already defined in {first.path}", line=line)
            singles[key] = _Item(path, line, value)
        else:
            known = ", ".join((*SINGLE_SECTIONS, *LIST_SECTIONS))
            raise ConfigError(path, f"unknown section `{key}` (known: {known})", line=line)


def _parse(spec: type[BaseModel], item: _Item, label: str) -> Any:
    try:
        return spec.model_validate(strip_lines(item.value))
    except ValidationError as exc:
        raise ConfigError(item.path, describe_validation_error(exc), line=item.line, entry=label) from None


def _label(item: _Item, section: str, key: str) -> str:
    value = item.value.get(key) if isinstance(item.value, dict) else None
    return f"{section} {value!r}" if value else section


def _build(lists: dict[str, list[_Item]], singles: dict[str, _Item]) -> RuleSet:
    modalities = _modalities(singles["modalities"])
    checker = _ValueChecker(modalities)
    precedence = _precedence(singles["precedence"], modalities)
    decision: DecisionSpec = _parse(DecisionSpec, singles["decision"], "decision")

    vector_stems = tuple(checker.stem(item, "vector_stems") for item in lists["vector_stems"])
    cell_stems = tuple(checker.stem(item, "cell_stems") for item in lists["cell_stems"])
    gene_words = tuple(checker.gene_word(item) for item in lists["gene_words"])
    cell_infixes = tuple(checker.infix(item) for item in lists["cell_infixes"])
    name_kinds = checker.name_kinds(singles["name_kinds"])

    ids = _UniqueIds()
    keywords = tuple(checker.keyword(item, ids) for item in lists["keywords"])
    exclusions = tuple(_exclusion(item, ids) for item in lists["exclusions"])
    events = tuple(_event(item, ids) for item in lists["events"])
    unknown_scope = set(decision.broad_scope) - {rule.id for rule in keywords}
    if unknown_scope:
        raise ConfigError(singles["decision"].path, f"decision.broad_scope: no keyword rule {sorted(unknown_scope)}",
                          line=singles["decision"].line)
    if not any(rule.event == "approval" for rule in events):
        raise ConfigError(lists["events"][0].path, "`events` needs an `approval` group")
    indication_spec: IndicationSpec = _parse(IndicationSpec, singles["indication"], "indication")
    indication = EventRule(indication_spec.id, "approval", indication_spec.says,
                           _phrase_pattern(singles["indication"], indication_spec))

    return RuleSet(
        modalities=modalities,
        precedence=precedence,
        atmp_threshold=decision.atmp_threshold,
        catalogue_weight=decision.catalogue_weight,
        broad_scope=frozenset(decision.broad_scope),
        vector_stems=_longest_first(vector_stems),
        cell_stems=_longest_first(cell_stems),
        gene_words=_longest_first(gene_words),
        cell_infixes=cell_infixes,
        name_kinds=name_kinds,
        not_names=frozenset(_words(lists["not_names"], "not_names")),
        not_trade_names=frozenset(word.casefold() for word in _words(lists["not_trade_names"], "not_trade_names")),
        keywords=keywords,
        exclusions=exclusions,
        events=events,
        indication=indication,
        gene_name_pattern=_gene_name_pattern(vector_stems, cell_stems),
        cell_name_pattern=_cell_name_pattern(cell_stems),
    )


def _modalities(item: _Item) -> dict[str, Modality]:
    if not isinstance(item.value, dict):
        raise ConfigError(item.path, "`modalities` must map each modality to its eu_category", line=item.line)
    modalities = {}
    for name, raw in item.value.items():
        if name == "__line__":
            continue
        spec: ModalitySpec = _parse(ModalitySpec, _Item(item.path, _line_of(raw, item.line), raw),
                                    f"modality {name!r}")
        modalities[name] = Modality(name, spec.eu_category, spec.says, frozenset(spec.submodalities))
    if not modalities:
        raise ConfigError(item.path, "`modalities` is empty", line=item.line)
    return modalities


def _precedence(item: _Item, modalities: dict[str, Modality]) -> tuple[str, ...]:
    order = item.value
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(modalities):
        raise ConfigError(item.path, f"`precedence` must list each modality once: {', '.join(modalities)}",
                          line=item.line)
    return tuple(order)


def _line_of(raw: Any, default: int | None) -> int | None:
    return raw.get("__line__", default) if isinstance(raw, dict) else default


class _UniqueIds:
    """Rule ids name rules in tests and reasons, so two rules of one section may not share one."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], _Item] = {}

    def claim(self, section: str, rule_id: str, item: _Item) -> None:
        first = self._seen.get((section, rule_id))
        if first is not None:
            raise ConfigError(item.path, f"duplicate {section} id {rule_id!r} (first in {first.path}:{first.line})",
                              line=item.line, entry=f"{section} {rule_id!r}")
        self._seen[(section, rule_id)] = item


class _ValueChecker:
    """Checks that every modality and submodality a rule votes for is one the categories define."""

    def __init__(self, modalities: dict[str, Modality]) -> None:
        self.modalities = modalities
        self.submodalities = frozenset().union(*(m.submodalities for m in modalities.values()))

    def check(self, item: _Item, label: str, modality: str | None, submodality: str | None) -> None:
        if modality is not None and modality not in self.modalities:
            raise ConfigError(item.path, f"unknown modality {modality!r} (known: {', '.join(self.modalities)})",
                              line=item.line, entry=label)
        if submodality is not None and submodality not in self.submodalities:
            raise ConfigError(item.path, f"unknown submodality {submodality!r} (add it to a modality's "
                              "submodalities in the categories)", line=item.line, entry=label)
        if modality and submodality and submodality not in self.modalities[modality].submodalities:
            raise ConfigError(item.path, f"submodality {submodality!r} is not one of {modality}'s",
                              line=item.line, entry=label)

    def stem(self, item: _Item, section: str) -> Stem:
        label = _label(item, section, "stem")
        spec: StemSpec = _parse(StemSpec, item, label)
        self.check(item, label, spec.modality, spec.submodality)
        return Stem(spec.stem, spec.says, spec.modality, spec.submodality)

    def gene_word(self, item: _Item) -> Stem:
        label = _label(item, "gene_words", "ending")
        spec: GeneWordSpec = _parse(GeneWordSpec, item, label)
        self.check(item, label, None, spec.submodality)
        return Stem(spec.ending, spec.says, None, spec.submodality)

    def infix(self, item: _Item) -> Stem:
        label = _label(item, "cell_infixes", "infix")
        spec: InfixSpec = _parse(InfixSpec, item, label)
        self.check(item, label, spec.modality, None)
        return Stem(spec.infix, spec.says, spec.modality)

    def name_kinds(self, item: _Item) -> dict[str, NameKind]:
        raw = item.value
        if not isinstance(raw, dict) or sorted(k for k in raw if k != "__line__") != sorted(NAME_KINDS):
            raise ConfigError(item.path, f"`name_kinds` must define exactly: {', '.join(NAME_KINDS)}", line=item.line)
        kinds = {}
        for name in NAME_KINDS:
            sub_item = _Item(item.path, _line_of(raw[name], item.line), raw[name])
            spec: NameKindSpec = _parse(NameKindSpec, sub_item, f"name_kinds {name}")
            self.check(sub_item, f"name_kinds {name}", spec.modality, None)
            kinds[name] = NameKind(spec.weight, spec.says, spec.modality)
        return kinds

    def keyword(self, item: _Item, ids: _UniqueIds) -> KeywordRule:
        label = _label(item, "keyword", "id")
        spec: KeywordSpec = _parse(KeywordSpec, item, label)
        ids.claim("keyword", spec.id, item)
        self.check(item, label, spec.modality, spec.submodality)
        if spec.decisive and spec.modality is None:
            raise ConfigError(item.path, "a decisive rule must name the modality it decides", line=item.line,
                              entry=label)
        return KeywordRule(
            id=spec.id, says=spec.says, pattern=_phrase_pattern(item, spec),
            weight=spec.weight, vote=spec.weight if spec.vote is None else spec.vote,
            modality=spec.modality, submodality=spec.submodality, decisive=spec.decisive,
        )


def _exclusion(item: _Item, ids: _UniqueIds) -> ExclusionRule:
    label = _label(item, "exclusion", "id")
    spec: ExclusionSpec = _parse(ExclusionSpec, item, label)
    ids.claim("exclusion", spec.id, item)
    alternatives = []
    if spec.endings:
        endings = "|".join(map(re.escape, sorted(spec.endings, key=len, reverse=True)))
        alternatives.append(rf"(?<!-)(?i:[a-z]*(?:{endings}))")
    pattern = _phrase_pattern(item, spec, alternatives)
    return ExclusionRule(spec.id, spec.says, pattern, tuple(spec.endings), spec.weight)


def _event(item: _Item, ids: _UniqueIds) -> EventRule:
    label = _label(item, "event", "id")
    spec: EventSpec = _parse(EventSpec, item, label)
    ids.claim("event", spec.id, item)
    return EventRule(spec.id, spec.event, spec.says, _phrase_pattern(item, spec))


def _words(items: list[_Item], section: str) -> list[str]:
    for item in items:
        if not isinstance(item.value, str) or not item.value.strip():
            raise ConfigError(item.path, f"`{section}` is a list of words", line=item.line)
    return [item.value.strip() for item in items]


def _longest_first(stems: tuple[Stem, ...]) -> tuple[Stem, ...]:
    """The longest ending that fits a word is the one that explains it (-parvovec before -vec)."""
    return tuple(sorted(stems, key=lambda stem: len(stem.stem), reverse=True))


# ------------------------------------------------------------------------------------------- patterns

def phrase_regex(phrase: str) -> str:
    """A phrase as written by a rule author, as a regular expression (see the header of keywords.yaml)."""
    return rf"(?<!\w){_phrase_body(phrase)}(?!\w)"


def _phrase_body(phrase: str) -> str:
    parts = []
    for word in (w for w in re.split(_SEPARATOR, phrase.strip()) if w):
        parts.append(re.escape(word[:-1]) + r"\w*" if word.endswith("*") else re.escape(word))
    return _SEPARATOR.join(parts)


def _phrase_pattern(item: _Item, spec: _PhraseSpec, extra: list[str] | None = None) -> re.Pattern[str]:
    """One expression per rule, word boundaries outside the alternatives: checked once per position, it is
    several times faster than a boundary on each phrase."""
    alternatives = list(extra or [])
    # Longest first: a regular expression takes the first alternative that fits, not the longest.
    if spec.phrases:
        alternatives.append("(?i:" + "|".join(map(_phrase_body, _longest_phrases(spec.phrases))) + ")")
    alternatives.extend(map(_phrase_body, _longest_phrases(spec.acronyms)))
    if not alternatives:
        raise ConfigError(item.path, "a rule needs at least one phrase, acronym or ending", line=item.line,
                          entry=_label(item, "rule", "id"))
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")


def _longest_phrases(phrases: list[str]) -> list[str]:
    return sorted(phrases, key=len, reverse=True)


def _gene_name_pattern(vector_stems: tuple[Stem, ...], cell_stems: tuple[Stem, ...]) -> re.Pattern[str]:
    """Two-word names: a word ending in -gene, then one ending in a vector or cell stem."""
    endings = "|".join(re.escape(stem.stem) for stem in _longest_first((*vector_stems, *cell_stems)))
    return re.compile(rf"(?i)(?<![\w-])([a-z]{{3,}}gene)\s+([a-z]{{2,}}(?:{endings})){_NAME_SUFFIX}(?!\w)")


def _cell_name_pattern(cell_stems: tuple[Stem, ...]) -> re.Pattern[str]:
    endings = "|".join(re.escape(stem.stem) for stem in _longest_first(cell_stems))
    return re.compile(rf"(?i)(?<![\w-])([a-z]{{3,}}(?:{endings})){_NAME_SUFFIX}(?!\w)")
