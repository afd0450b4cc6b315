"""Loading the rules: the shipped files are valid and consistent, and a broken rule file is refused clearly."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from monitor.catalogue import MODALITIES, SUBMODALITIES, Catalogue
from monitor.classify import analyse
from monitor.config import ConfigError
from monitor.ruleset import DEFAULT_RULES_DIR, load_rules, phrase_regex


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    """A copy of the shipped rules that a test may break or extend."""
    folder = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, folder)
    return folder


def _add(folder: Path, text: str, name: str = "local.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _refused(folder: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_rules(folder)
    return str(caught.value)


# --- the shipped rules ------------------------------------------------------------------------------------------

def test_shipped_rules_load_with_every_section():
    rules = load_rules()
    assert set(rules.modalities) == set(MODALITIES)
    assert rules.keywords and rules.exclusions and rules.vector_stems and rules.cell_stems
    assert [rule.event for rule in rules.events] == ["safety", "guidance", "recommendation", "approval"]


def test_every_catalogue_submodality_belongs_to_some_modality():
    """A product's submodality from the baseline must be a value the classifier can answer."""
    allowed = set().union(*(modality.submodalities for modality in load_rules().modalities.values()))
    assert set(SUBMODALITIES) - allowed == set()


def test_every_shipped_phrase_finds_its_own_words():
    """Each phrase, written out as plain words, is found by its rule: no phrase is mistyped into uselessness."""
    rules = load_rules()
    compiled = {rule.id: rule.pattern for rule in (*rules.keywords, *rules.exclusions, *rules.events, rules.indication)}
    misses = []
    for path in sorted(DEFAULT_RULES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw_rules = [*(data.get("keywords") or []), *(data.get("exclusions") or []), *(data.get("events") or [])]
        raw_rules += [data["indication"]] if "indication" in data else []
        for raw in raw_rules:
            for phrase in (*raw.get("phrases", ()), *raw.get("acronyms", ())):
                words = phrase.replace("*", "")
                if not compiled[raw["id"]].search(f"x {words} y"):
                    misses.append((raw["id"], phrase))
    assert misses == []


# --- phrases ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("phrase", "text", "found"), [
    ("cell based", "a cell-based product", True),
    ("cell based", "a cell based product", True),
    ("cell based", "a cellbased product", False),
    ("therap*", "gene therapies", True),
    ("gene therap*", "antigene therapy", False),
    ("gene", "genes", False),
    ("HPC, Cord Blood", "licensed HPC, Cord Blood units", True),
    ("510(k)", "cleared through a 510(k) notice", True),
])
def test_phrase_syntax(phrase, text, found):
    assert bool(re.search(phrase_regex(phrase), text, re.IGNORECASE)) is found


def test_within_a_rule_the_longest_phrase_is_the_match():
    rules = load_rules()
    dendritic = next(rule for rule in rules.keywords if rule.id == "dendritic")
    assert dendritic.pattern.search("A dendritic cell vaccine").group() == "dendritic cell vaccine"


def test_stems_are_tried_longest_first():
    stems = [stem.stem for stem in load_rules().vector_stems]
    assert stems[-1] == "vec"
    assert stems.index("parvovec") < stems.index("repvec") < stems.index("vec")


# --- extending -----------------------------------------------------------------------------------------------------

def test_a_local_file_adds_rules_to_the_shipped_ones(rules_dir):
    _add(rules_dir, "keywords:\n  - id: nk_cells\n    says: natural killer cells\n    phrases: [NK cell therap*]\n"
                    "    weight: 3\n    modality: cell_therapy\n")
    rules = load_rules(rules_dir)
    analysis = analyse("NK cell therapy approved", regulator="FDA", catalogue=Catalogue(), rules=rules)
    assert "keyword:nk_cells" in analysis.fired
    assert analysis.classification.modality == "cell_therapy"


def test_a_single_file_can_hold_all_the_rules(tmp_path):
    merged = "\n".join(path.read_text(encoding="utf-8") for path in sorted(DEFAULT_RULES_DIR.glob("*.yaml")))
    path = tmp_path / "all.yaml"
    path.write_text(merged, encoding="utf-8")
    assert load_rules(path).rule_ids() == load_rules().rule_ids()


# --- refusing bad rules ------------------------------------------------------------------------------------------

def test_unknown_section_is_refused(rules_dir):
    _add(rules_dir, "keywordz: []\n")
    assert "local.yaml" in _refused(rules_dir)
    assert "unknown section `keywordz`" in _refused(rules_dir)


def test_unknown_modality_names_file_line_and_rule(rules_dir):
    _add(rules_dir, "keywords:\n  - id: ok\n    says: fine\n    phrases: [fine words]\n    weight: 1\n"
                    "  - id: broken\n    says: x\n    phrases: [x y]\n    weight: 1\n    modality: gene_thing\n")
    message = _refused(rules_dir)
    assert "local.yaml:6 (keyword 'broken')" in message
    assert "unknown modality 'gene_thing'" in message


def test_unknown_submodality_is_refused(rules_dir):
    _add(rules_dir, "keywords:\n  - id: xx\n    says: x\n    phrases: [x y]\n    weight: 1\n    submodality: nano\n")
    assert "unknown submodality 'nano'" in _refused(rules_dir)


def test_submodality_must_belong_to_the_modality(rules_dir):
    _add(rules_dir, "keywords:\n  - id: xx\n    says: x\n    phrases: [x y]\n    weight: 1\n"
                    "    modality: gene_therapy\n    submodality: til\n")
    assert "submodality 'til' is not one of gene_therapy's" in _refused(rules_dir)


def test_duplicate_rule_id_is_refused(rules_dir):
    _add(rules_dir, "keywords:\n  - id: car_t\n    says: again\n    phrases: [x y]\n    weight: 1\n")
    assert "duplicate keyword id 'car_t'" in _refused(rules_dir)


def test_a_single_section_defined_twice_is_refused(rules_dir):
    _add(rules_dir, "precedence: [cell_therapy]\n")
    assert "`precedence` is already defined in" in _refused(rules_dir)


def test_missing_sections_are_named(tmp_path):
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(DEFAULT_RULES_DIR / "keywords.yaml", folder)
    message = _refused(folder)
    assert "missing section(s): modalities, precedence" in message


def test_empty_folder_is_refused(tmp_path):
    assert "no *.yaml rule files" in _refused(tmp_path)


@pytest.mark.parametrize(("rule", "problem"), [
    ("    phrases: [ce*ll]\n    weight: 1\n", "'*' may only end a word"),
    ("    weight: 1\n", "at least one phrase"),
    ("    phrases: [x y]\n    weight: 11\n", "weight"),
    ("    phrases: [x y]\n    weight: 1\n    colour: red\n", "colour: unknown key"),
    ("    phrases: [x y]\n    weight: 1\n    decisive: true\n", "must name the modality"),
])
def test_bad_keyword_is_refused(rules_dir, rule, problem):
    _add(rules_dir, f"keywords:\n  - id: bad\n    says: bad\n{rule}")
    assert problem in _refused(rules_dir)


def test_bad_exclusion_ending_is_refused(rules_dir):
    _add(rules_dir, "exclusions:\n  - id: bad\n    says: bad\n    endings: [-MAB]\n    weight: 1\n")
    assert "an ending is two or more lower-case letters" in _refused(rules_dir)


def test_precedence_must_list_each_modality(rules_dir):
    path = rules_dir / "categories.yaml"
    path.write_text(path.read_text().replace("precedence: [combined_atmp, ", "precedence: ["), encoding="utf-8")
    assert "`precedence` must list each modality once" in _refused(rules_dir)


def test_broad_scope_must_name_keyword_rules(rules_dir):
    path = rules_dir / "categories.yaml"
    path.write_text(path.read_text().replace("broad_scope: [atmp, ", "broad_scope: [no_such_rule, "), encoding="utf-8")
    assert "decision.broad_scope: no keyword rule ['no_such_rule']" in _refused(rules_dir)


def test_events_need_an_approval_group(rules_dir):
    path = rules_dir / "events.yaml"
    path.write_text(path.read_text().replace("event: approval", "event: guidance"), encoding="utf-8")
    assert "needs an `approval` group" in _refused(rules_dir)


def test_invalid_yaml_is_refused_with_its_line(rules_dir):
    _add(rules_dir, "keywords:\n  - id: [unclosed\n")
    assert "local.yaml:3" in _refused(rules_dir)
    assert "not valid YAML" in _refused(rules_dir)
