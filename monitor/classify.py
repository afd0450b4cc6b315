"""Classifying a regulator's announcement as an ATMP event, with reasons a reader can check.

The rules are data (monitor/rules/*.yaml, loaded by monitor.ruleset); this module applies them. Evidence is
weighed rather than matched first-wins, because real announcements mix signals: an approval of a CAR T
therapy is also called a "gene therapy", and a gene therapy's news may mention an antibody. Each piece of
evidence leaves a reason in plain words, so that a wrong answer can be traced to the rule that gave it.

The classifier only reads the catalogue: a product it finds for the first time is reported as new, and it is
up to the caller to learn it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

from monitor.catalogue import Catalogue, name_key, without_fda_suffix
from monitor.models import Classification, Product, ProductMention
from monitor.ruleset import EventRule, ExclusionRule, KeywordRule, RuleSet, Stem, load_rules

_CLEAN = str.maketrans({"®": "", "™": "", "℠": "", "©": "", "\u00a0": " ", "\u2010": "-", "\u2011": "-",
                        "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-"})
# A brand is one capitalised word without digits: "(CTL019)" next to an INN is a sponsor code, not a brand.
_TRADE_BEFORE = re.compile(r"([A-Z][A-Za-z]{2,})\s*\(\s*$")
_TRADE_AFTER = re.compile(r"\s*\(\s*([A-Z][A-Za-z]{2,})\s*\)")


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped rules, read once per process: classification runs for every stored entry."""
    return load_rules()


@dataclass(frozen=True, slots=True)
class FoundProduct:
    """A product named in an entry, with the names a caller needs to add it to a catalogue."""

    name: str
    known: bool
    trade_name: str | None
    proper_name: str | None
    approved_by: tuple[str, ...]
    modality: str | None
    submodality: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Analysis:
    """A classification with what produced it: the rule ids that fired (see RuleSet.rule_ids) and the products."""

    classification: Classification
    fired: frozenset[str]
    products: tuple[FoundProduct, ...]


def classify(
    title: str, summary: str = "", *, regulator: str | None = None, catalogue: Catalogue,
    rules: RuleSet | None = None,
) -> Classification:
    """Classify one announcement; `regulator` decides whether a product is new *for that regulator*."""
    return analyse(title, summary, regulator=regulator, catalogue=catalogue, rules=rules).classification


def analyse(
    title: str, summary: str = "", *, regulator: str | None = None, catalogue: Catalogue,
    rules: RuleSet | None = None,
) -> Analysis:
    """The classification with the rule ids that fired and the products found, for tests and rule authors.

    Confidence multiplies three certainties in [0, 1]: that it is an ATMP at all (evidence beyond the threshold,
    halving the doubt for each further threshold's worth), the share of modality votes the winner got, and how
    the event was read (title 1.0, summary 0.85, no event words 0.7); so a reader can sort alerts by it.
    """
    rules = rules or default_rules()
    title = (title or "").translate(_CLEAN)
    summary = (summary or "").translate(_CLEAN)
    text = f"{title}\n{summary}"
    tally = _Tally()
    names = _find_names(text, rules)
    distinct = _distinct(names)
    products = _find_products(text, distinct, regulator, catalogue, rules, tally)
    for name in distinct:
        tally.add_name(name, rules)
    _weigh_phrases(text, names, rules, tally)

    if tally.evidence - tally.against < rules.atmp_threshold:
        return Analysis(_not_atmp(tally, rules), frozenset(tally.fired), ())

    tally.reasons.extend(f"outweighed: {reason}" for reason in tally.exclusion_reasons)
    event, event_certainty = _event(title, summary, products, regulator, rules, tally)
    if event == "guidance" and _broad_scope(tally, rules):
        modality, share, submodality = None, 1.0, None
    else:
        modality, share = _modality(tally, rules)
        submodality = _submodality(tally, rules, modality)
    net = tally.evidence - tally.against
    confidence = (1 - 0.5 ** (net / rules.atmp_threshold)) * (0.6 + 0.4 * share) * event_certainty
    classification = Classification(
        is_atmp=True,
        modality=modality,
        eu_category=rules.modalities[modality].eu_category if modality else None,
        submodality=submodality,
        event=event,
        products=[ProductMention(p.name, p.known) for p in products],
        confidence=confidence,
        reasons=tally.reasons,
    )
    return Analysis(classification, frozenset(tally.fired), tuple(products))


# ------------------------------------------------------------------------------------------------ evidence

@dataclass
class _Tally:
    """Evidence for and against, and votes for each field, as the rules find them."""

    evidence: int = 0
    against: int = 0
    modality: Counter[str] = field(default_factory=Counter)
    submodality: Counter[str] = field(default_factory=Counter)
    decisive: Counter[str] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)
    exclusion_reasons: list[str] = field(default_factory=list)
    fired: set[str] = field(default_factory=set)

    def vote(self, weight: int, modality: str | None, submodality: str | None) -> None:
        if modality:
            self.modality[modality] += weight
        if submodality:
            self.submodality[submodality] += weight

    def add_name(self, name: _Name, rules: RuleSet) -> None:
        kind = rules.name_kinds[name.kind]
        self.evidence += kind.weight
        self.vote(kind.weight, name.modality, name.submodality)
        self.fired.update(name.fired)
        self.reasons.append(name.reason)


@dataclass(frozen=True, slots=True)
class _Name:
    """An INN-shaped name found in the text, and what its stems say."""

    start: int
    end: int
    inn: str
    kind: str
    modality: str | None
    submodality: str | None
    trade_name: str | None
    fired: tuple[str, ...]
    reason: str


def _longest_stem(word: str, stems: tuple[Stem, ...]) -> Stem | None:
    return next((stem for stem in stems if word.endswith(stem.stem)), None)


def _describe(stem: Stem, modality: str | None, submodality: str | None) -> str:
    fields = ", ".join(value for value in (modality, submodality) if value)
    return f"{stem.says} ({fields})" if fields else stem.says


def _find_names(text: str, rules: RuleSet) -> list[_Name]:
    names: list[_Name] = []
    for match in rules.gene_name_pattern.finditer(text):
        name = _gene_name(match, text, rules)
        if name is not None:
            names.append(name)
    taken = [(name.start, name.end) for name in names]
    for match in rules.cell_name_pattern.finditer(text):
        if any(start < match.end() and match.start() < end for start, end in taken):
            continue
        name = _cell_name(match, text, rules)
        if name is not None:
            names.append(name)
    return sorted(names, key=lambda name: name.start)


def _gene_name(match: re.Match[str], text: str, rules: RuleSet) -> _Name | None:
    first, second, suffix = match.group(1).lower(), match.group(2).lower(), match.group(3)
    if first in rules.not_names:
        return None
    inn = f"{first} {second}{suffix}"
    vector = _longest_stem(second, rules.vector_stems)
    if vector is not None:
        kind, stem, fired = "gene_vector", vector, [f"vector_stem:{vector.stem}"]
        modality, submodality = vector.modality, vector.submodality
    else:
        stem = _longest_stem(second, rules.cell_stems)
        kind, fired = "gene_cells", [f"cell_stem:{stem.stem}"]
        modality, submodality = rules.name_kinds["gene_cells"].modality, stem.submodality
    reason = f"INN stem -{stem.stem} in '{inn}' → {_describe(stem, modality, submodality)}"
    gene_word = _longest_stem(first, rules.gene_words)
    if gene_word is not None:
        submodality = gene_word.submodality
        fired.append(f"gene_word:{gene_word.stem}")
        reason += f"; -{gene_word.stem} → {_describe(gene_word, None, submodality)}"
    return _Name(match.start(), match.end(), inn, kind, modality, submodality,
                 _adjacent_trade_name(text, match.start(), match.end(), rules), tuple(fired), reason)


def _cell_name(match: re.Match[str], text: str, rules: RuleSet) -> _Name | None:
    word, suffix = match.group(1).lower(), match.group(2)
    if word in rules.not_names:
        return None
    stem = _longest_stem(word, rules.cell_stems)
    inn = word + suffix
    fired = [f"cell_stem:{stem.stem}"]
    modality = rules.name_kinds["cells"].modality
    reason = f"INN stem -{stem.stem} in '{inn}' → {_describe(stem, modality, stem.submodality)}"
    prefix = word[: -len(stem.stem)]
    for infix in rules.cell_infixes:
        if infix.stem in prefix:
            modality = infix.modality
            fired.append(f"cell_infix:{infix.stem}")
            reason += f"; infix -{infix.stem}- → {_describe(infix, modality, None)}"
            break
    return _Name(match.start(), match.end(), inn, "cells", modality, stem.submodality,
                 _adjacent_trade_name(text, match.start(), match.end(), rules), tuple(fired), reason)


def _distinct(names: list[_Name]) -> list[_Name]:
    """One name per substance, however often it is written; the first mention, with a brand if any has one."""
    first: dict[str, _Name] = {}
    for name in names:
        key = name_key(name.inn)
        kept = first.get(key)
        if kept is None:
            first[key] = name
        elif kept.trade_name is None and name.trade_name is not None:
            first[key] = replace(kept, trade_name=name.trade_name)
    return list(first.values())


def _adjacent_trade_name(text: str, start: int, end: int, rules: RuleSet) -> str | None:
    """A brand written next to the INN: "Tecelra (afamitresgene autoleucel)" or "lifileucel (Amtagvi)"."""
    before = _TRADE_BEFORE.search(text, max(0, start - 60), start)
    after = _TRADE_AFTER.match(text, end)
    for found in (before, after):
        if found and found.group(1).casefold() not in rules.not_trade_names:
            return found.group(1)
    return None


def _weigh_phrases(text: str, names: list[_Name], rules: RuleSet, tally: _Tally) -> None:
    """Keyword and exclusion phrases; a phrase inside a longer one found is ignored; a rule counts once.

    Only containment hides a phrase ("gene therapy" inside "cell-based gene therapy"): two phrases that merely
    overlap ("encapsulated cell" and "cell-based gene therapy") both say something true.
    """
    candidates = []
    for rule in (*rules.keywords, *rules.exclusions):
        for match in rule.pattern.finditer(text):
            candidates.append((match.start(), match.end(), rule, match.group()))
    taken = [(name.start, name.end) for name in names]
    kept: dict[str, list[str]] = {}
    rule_by_id: dict[str, KeywordRule | ExclusionRule] = {}
    for start, end, rule, matched in sorted(candidates, key=lambda c: (c[0] - c[1], c[0])):
        if any(t_start <= start and end <= t_end for t_start, t_end in taken):
            continue
        taken.append((start, end))
        key = f"{'keyword' if isinstance(rule, KeywordRule) else 'exclusion'}:{rule.id}"
        rule_by_id[key] = rule
        if matched.casefold() not in (seen.casefold() for seen in kept.setdefault(key, [])):
            kept[key].append(matched)
    for key, matches in kept.items():
        rule = rule_by_id[key]
        if isinstance(rule, KeywordRule):
            _count_keyword(rule, matches[0], tally)
        else:
            _count_exclusion(rule, matches, tally)


def _count_keyword(rule: KeywordRule, matched: str, tally: _Tally) -> None:
    tally.fired.add(f"keyword:{rule.id}")
    tally.evidence += rule.weight
    tally.vote(rule.vote, None if rule.decisive else rule.modality, rule.submodality)
    if rule.decisive:
        tally.decisive[rule.modality] += max(rule.vote, 1)
    fields = ", ".join(value for value in (rule.modality, rule.submodality) if value)
    tally.reasons.append(f"'{matched}' → {rule.says}" + (f" ({fields})" if fields else ""))


def _count_exclusion(rule: ExclusionRule, matches: list[str], tally: _Tally) -> None:
    tally.fired.add(f"exclusion:{rule.id}")
    tally.against += rule.weight
    tally.exclusion_reasons.append(f"excluded: {rule.says}: " + ", ".join(_excluded(rule, m) for m in matches))


def _excluded(rule: ExclusionRule, matched: str) -> str:
    """'-siran in "vutrisiran"' for a stem, the phrase itself otherwise."""
    core = matched.casefold().split("-")[0]
    ending = next((e for e in sorted(rule.endings, key=len, reverse=True) if core.endswith(e)), None)
    return f"-{ending} in '{matched}'" if ending and " " not in matched else f"'{matched}'"


# ------------------------------------------------------------------------------------------------ products

def _find_products(
    text: str, names: list[_Name], regulator: str | None, catalogue: Catalogue, rules: RuleSet, tally: _Tally,
) -> list[FoundProduct]:
    """Catalogue products named in the text (by any regulator), then new products recognised by their INN."""
    found = list(catalogue.find_in_text(text))
    new_names: list[_Name] = []
    for name in names:
        product = catalogue.lookup(name.inn) or (catalogue.lookup(name.trade_name) if name.trade_name else None)
        if product is None:
            new_names.append(name)
        elif product not in found:
            found.append(product)
    products = [_catalogued(group, regulator) for group in _same_products(found, catalogue)]
    for product in products:
        tally.evidence += rules.catalogue_weight
        tally.vote(rules.catalogue_weight, product.modality, product.submodality)
        tally.reasons.append(product.reason)
    seen: set[str] = {name_key(p.name) for p in products}
    for name in new_names:
        label = name.trade_name or name.inn
        if name_key(label) in seen:
            continue
        seen.add(name_key(label))
        where = f" for {regulator}" if regulator else ""
        reason = f"new product{where}: {name.trade_name} ({name.inn})" if name.trade_name else \
            f"new product{where}: {name.inn}"
        products.append(FoundProduct(label, False, name.trade_name, name.inn, (), name.modality,
                                     name.submodality, reason))
        tally.reasons.append(reason)
    return products


def _same_products(found: list[Product], catalogue: Catalogue) -> list[list[Product]]:
    """Catalogue items grouped into products: one regulator's Kymriah and another's are the same product.

    Items are the same product when they share a trade name or an identifying proper name ("HPC, Cord Blood"
    names eight FDA licences, so it identifies none).
    """
    groups: list[tuple[set[str], list[Product]]] = []
    for product in found:
        keys = {"trade:" + name_key(product.trade_name)}
        if product.proper_name and catalogue.lookup(product.proper_name) is not None:
            keys.add("proper:" + name_key(without_fda_suffix(product.proper_name) or product.proper_name))
        matching = [group for group in groups if group[0] & keys]
        merged_keys, merged = set(keys), [product]
        for group in matching:
            groups.remove(group)
            merged_keys |= group[0]
            merged = group[1] + merged
        groups.append((merged_keys, merged))
    return [members for _, members in groups]


def _catalogued(group: list[Product], regulator: str | None) -> FoundProduct:
    approved_by = tuple(sorted({p.regulator for p in group}))
    own = [p for p in group if regulator is not None and p.regulator.casefold() == regulator.casefold()]
    known = regulator is None or bool(own)
    main = own[0] if own else group[0]
    if regulator is None:
        reason = f"{main.trade_name} in catalogue ({', '.join(approved_by)})"
    elif known:
        reason = f"{main.trade_name} in {regulator} catalogue"
    else:
        reason = f"{main.trade_name} approved elsewhere ({', '.join(approved_by)}), not in {regulator} catalogue"
    return FoundProduct(main.trade_name, known, main.trade_name, main.proper_name, approved_by, main.modality,
                        main.submodality, reason)


# ------------------------------------------------------------------------------------------------ decisions

def _not_atmp(tally: _Tally, rules: RuleSet) -> Classification:
    """Everything empty but the reasons; confidence grows with how far the evidence falls short."""
    net = tally.evidence - tally.against
    reasons = list(tally.exclusion_reasons)
    if tally.evidence:
        reasons += tally.reasons
        reasons.append(f"not an ATMP: evidence {tally.evidence} less exclusions {tally.against} "
                       f"is below {rules.atmp_threshold}")
    else:
        reasons.append("not an ATMP: no sign of a gene, cell or tissue therapy")
    certainty = 1 - 0.5 ** ((rules.atmp_threshold - net) / rules.atmp_threshold + 1)
    return Classification(is_atmp=False, confidence=certainty, reasons=reasons)


def _ranked(votes: Counter[str], rules: RuleSet) -> list[tuple[str, int]]:
    return sorted(votes.items(), key=lambda item: (-item[1], rules.precedence.index(item[0])))


def _modality(tally: _Tally, rules: RuleSet) -> tuple[str | None, float]:
    """The modality with most votes (ties: EU precedence), and its share of the votes."""
    if tally.decisive:
        modality = _ranked(tally.decisive, rules)[0][0]
        tally.reasons.append(f"modality {modality} decided by the device rule → EU {_eu(rules, modality)}")
        return modality, 1.0
    if not tally.modality:
        tally.reasons.append("modality not told by the text")
        return None, 0.0
    ranked = _ranked(tally.modality, rules)
    modality, votes = ranked[0]
    others = ", ".join(f"{name} {count}" for name, count in ranked[1:])
    tally.reasons.append(f"modality {modality} ({votes} votes" + (f"; {others}" if others else "") +
                         f") → EU {_eu(rules, modality)}")
    return modality, votes / sum(tally.modality.values())


def _broad_scope(tally: _Tally, rules: RuleSet) -> bool:
    """Guidance about advanced therapies as a whole (categories.yaml: decision.broad_scope) has no one modality."""
    named = sorted(rule for rule in rules.broad_scope if f"keyword:{rule}" in tally.fired)
    if named:
        tally.reasons.append(f"guidance for advanced therapies in general ({', '.join(named)}) → no single modality")
    return bool(named)


def _eu(rules: RuleSet, modality: str) -> str:
    return rules.modalities[modality].eu_category


def _submodality(tally: _Tally, rules: RuleSet, modality: str | None) -> str | None:
    """The platform with most votes among those of the modality (any, when the modality is not told)."""
    allowed = rules.modalities[modality].submodalities if modality else set(tally.submodality)
    votes = Counter({name: count for name, count in tally.submodality.items() if name in allowed and count > 0})
    if not votes:
        return None
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        tied = " vs ".join(name for name, count in ranked if count == ranked[0][1])
        tally.reasons.append(f"submodality unclear: {tied}")
        return None
    return ranked[0][0]


def _event(
    title: str, summary: str, products: list[FoundProduct], regulator: str | None, rules: RuleSet, tally: _Tally,
) -> tuple[str, float]:
    """What happened, read from the title first (see events.yaml), and how sure that reading is."""
    for part, where, certainty in ((title, "title", 1.0), (summary, "summary", 0.85)):
        for rule in rules.events:
            match = rule.pattern.search(part)
            if match:
                tally.fired.add(f"event:{rule.id}")
                said = f"'{match.group()}' in {where} → {rule.says}"
                if rule.event != "approval":
                    tally.reasons.append(f"{said} ({rule.event})")
                    return rule.event, certainty
                event, why = _approval(f"{title}\n{summary}", products, regulator, rules.indication, tally)
                tally.reasons.append(f"{said}; {why} → {event}")
                return event, certainty
    tally.reasons.append("no approval, opinion, safety or guidance words → other")
    return "other", 0.7


def _approval(
    text: str, products: list[FoundProduct], regulator: str | None, indication: EventRule, tally: _Tally,
) -> tuple[str, str]:
    """First approval of a product by this regulator, or a new use of one it has already approved."""
    new_use = indication.pattern.search(text)
    if new_use:
        tally.fired.add(f"indication:{indication.id}")
    known = [p.name for p in products if p.known]
    new = [p.name for p in products if not p.known]
    catalogue = f"{regulator} catalogue" if regulator else "catalogue"
    if new and not (known and new_use):
        return "new_product", f"{', '.join(new)} not in {catalogue}"
    if known:
        why = f"{', '.join(known)} already in {catalogue}"
        return "new_indication", why + (f", '{new_use.group()}' → {indication.says}" if new_use else "")
    if new_use:
        return "new_indication", f"'{new_use.group()}' → {indication.says}"
    return "new_product", "no approved product named"
