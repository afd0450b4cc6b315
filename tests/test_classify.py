"""The classifier: every rule against its examples, and the behaviour the pipeline relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.catalogue import Catalogue, load_baseline
from monitor.classify import analyse, classify, default_rules
from monitor.models import Product

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = yaml.safe_load((DATA / "classify_rules.yaml").read_text(encoding="utf-8"))["examples"]
CONTRACT_KEYS = ["is_atmp", "modality", "eu_category", "submodality", "event", "products", "confidence", "reasons"]


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue(load_baseline(DATA / "classify_catalogue.yaml"))


def _example_id(example: dict) -> str:
    return f"{'+'.join(example['fires'])}: {example['title'][:50]}"


# --- the rule examples (tests/data/classify_rules.yaml) ---------------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES, ids=[_example_id(e) for e in EXAMPLES])
def test_rule_example(example, catalogue):
    analysis = analyse(example["title"], example.get("summary", ""), regulator=example.get("regulator", "FDA"),
                       catalogue=catalogue)
    result = analysis.classification.as_dict()
    assert set(example["fires"]) <= analysis.fired, result["reasons"]
    for field, expected in example["expect"].items():
        assert result[field] == expected, f"{field}: {result['reasons']}"


def test_every_shipped_rule_has_an_example():
    exercised = {rule_id for example in EXAMPLES for rule_id in example["fires"]}
    assert default_rules().rule_ids() - exercised == set()


def test_examples_name_only_existing_rules():
    exercised = {rule_id for example in EXAMPLES for rule_id in example["fires"]}
    assert exercised - default_rules().rule_ids() == set()


# --- the contract ---------------------------------------------------------------------------------------------

def test_as_dict_has_exactly_the_contract_fields(catalogue):
    result = classify("FDA approves Kymriah for follicular lymphoma", regulator="FDA", catalogue=catalogue)
    assert list(result.as_dict()) == CONTRACT_KEYS
    assert 0.0 < result.confidence <= 1.0


def test_non_atmp_has_every_field_empty_but_reasons(catalogue):
    result = classify("FDA approves Leqembi (lecanemab-irmb)", "A monoclonal antibody.", catalogue=catalogue)
    data = result.as_dict()
    assert data["is_atmp"] is False
    assert [data[key] for key in ("modality", "eu_category", "submodality", "event")] == [None] * 4
    assert data["products"] == []
    assert any(reason.startswith("excluded: monoclonal antibody") for reason in data["reasons"])
    assert 0.0 < data["confidence"] <= 1.0


def test_classifying_never_changes_the_catalogue(catalogue):
    before = catalogue.products()
    classify("FDA approves Tecelra (afamitresgene autoleucel) for synovial sarcoma", regulator="FDA",
             catalogue=catalogue)
    assert catalogue.products() == before
    assert catalogue.lookup("Tecelra") is None


def test_default_rules_are_read_once():
    assert default_rules() is default_rules()


# --- products ---------------------------------------------------------------------------------------------------

def test_a_product_known_to_another_regulator_is_new_here_and_says_where(catalogue):
    result = classify("European Commission authorises Zolgensma", regulator="EMA", catalogue=catalogue)
    assert result.event == "new_product"
    assert [(p.name, p.known) for p in result.products] == [("Zolgensma", False)]
    assert "Zolgensma approved elsewhere (FDA), not in EMA catalogue" in result.reasons


def test_a_product_approved_by_two_regulators_is_one_product(catalogue):
    result = classify("Kymriah (tisagenlecleucel) label updated", regulator="EMA", catalogue=catalogue)
    assert [(p.name, p.known) for p in result.products] == [("Kymriah", True)]


def test_without_a_regulator_known_means_in_any_catalogue(catalogue):
    result = classify("Kymriah approved for a new use", catalogue=catalogue)
    assert [(p.name, p.known) for p in result.products] == [("Kymriah", True)]
    assert "Kymriah in catalogue (EMA, FDA)" in result.reasons


def test_fda_suffix_does_not_hide_a_known_product(catalogue):
    result = classify("FDA approves onasemnogene abeparvovec-xioi for older children", regulator="FDA",
                      catalogue=catalogue)
    assert [(p.name, p.known) for p in result.products] == [("Zolgensma", True)]
    assert result.event == "new_indication"


def test_brand_before_or_after_the_inn_names_a_new_product(catalogue):
    before = classify("FDA approves Tecelra (afamitresgene autoleucel)", regulator="FDA", catalogue=catalogue)
    after = classify("FDA approves lifileucel (Amtagvi)", regulator="FDA", catalogue=catalogue)
    assert [(p.name, p.known) for p in before.products] == [("Tecelra", False)]
    assert [(p.name, p.known) for p in after.products] == [("Amtagvi", False)]
    assert "new product for FDA: Tecelra (afamitresgene autoleucel)" in before.reasons


def test_a_sponsor_code_in_brackets_is_not_a_brand(catalogue):
    result = classify("Committee backs elivaldogene autotemcel (LentiD123)", regulator="FDA", catalogue=catalogue)
    assert [p.name for p in result.products] == ["elivaldogene autotemcel"]


def test_a_name_repeated_in_title_and_summary_is_one_product_and_one_reason(catalogue):
    analysis = analyse("FDA approves fidanacogene elaparvovec", "Beqvez (fidanacogene elaparvovec) is an AAV therapy.",
                       regulator="FDA", catalogue=catalogue)
    assert [p.name for p in analysis.products] == ["Beqvez"]
    assert analysis.products[0].proper_name == "fidanacogene elaparvovec"
    assert sum("INN stem -parvovec" in reason for reason in analysis.classification.reasons) == 1


def test_shared_proper_name_does_not_list_every_cord_blood_licence(catalogue):
    result = classify("Hemacord (HPC, Cord Blood) labelling updated", regulator="FDA", catalogue=catalogue)
    assert [p.name for p in result.products] == ["Hemacord"]


def test_english_words_ending_like_a_stem_are_not_names(catalogue):
    result = classify("Sponsor may cancel the gene therapy programme", regulator="FDA", catalogue=catalogue)
    assert result.products == []


def test_learned_product_is_known_to_its_regulator():
    learned = Catalogue([Product(regulator="FDA", trade_name="Tecelra", proper_name="afamitresgene autoleucel",
                                 modality="gene_modified_cell_therapy")])
    result = classify("FDA approves Tecelra for a second tumour type", regulator="FDA", catalogue=learned)
    assert result.event == "new_indication"
    assert result.modality == "gene_modified_cell_therapy"


# --- deciding the fields ---------------------------------------------------------------------------------------

def test_catalogue_modality_decides_when_the_text_has_no_platform_words(catalogue):
    result = classify("FDA approves MACI for a new patient group", regulator="FDA", catalogue=catalogue)
    assert (result.modality, result.eu_category, result.submodality) == ("tissue_engineered", "TEP", "chondrocyte")


def test_two_platforms_in_one_announcement_leave_submodality_open(catalogue):
    result = classify("FDA approves Casgevy and Lyfgenia", "CRISPR editing and a lentiviral vector.",
                      regulator="FDA", catalogue=catalogue)
    assert result.modality == "gene_modified_cell_therapy"
    assert result.submodality is None
    assert any(reason.startswith("submodality unclear") for reason in result.reasons)


def test_an_integral_device_makes_a_combined_atmp_whatever_the_votes(catalogue):
    result = classify("Encapsulated cell implant of exemplogene taroretcel approved", regulator="FDA",
                      catalogue=catalogue)
    assert (result.modality, result.eu_category) == ("combined_atmp", "cATMP")


def test_a_longer_phrase_hides_the_shorter_one_inside_it(catalogue):
    analysis = analyse("Cell-based gene therapy approved", regulator="FDA", catalogue=catalogue)
    assert "keyword:cell_based_gene_therapy" in analysis.fired
    assert "keyword:gene_therapy" not in analysis.fired


def test_acronyms_are_case_sensitive(catalogue):
    analysis = analyse("The car trip was approved by the til operator", regulator="FDA", catalogue=catalogue)
    assert {"keyword:car_t", "keyword:til"}.isdisjoint(analysis.fired)
    assert analysis.classification.is_atmp is False


def test_loose_gene_and_sickle_cell_do_not_make_an_atmp(catalogue):
    result = classify("FDA approves tablet for sickle cell disease caused by a gene mutation", regulator="FDA",
                      catalogue=catalogue)
    assert result.is_atmp is False


# --- the event ---------------------------------------------------------------------------------------------------

def test_title_decides_the_event_over_a_boxed_warning_in_the_summary(catalogue):
    result = classify("FDA approves CAR T cell therapy for lymphoma",
                      "The label has a boxed warning for cytokine release syndrome.", catalogue=catalogue)
    assert result.event == "new_product"


def test_summary_is_read_when_the_title_has_no_event_words(catalogue):
    result = classify("Update on a CAR T cell therapy", "The agency placed the study on clinical hold.",
                      catalogue=catalogue)
    assert result.event == "safety"
    assert "'clinical hold' in summary → safety action (safety)" in result.reasons


def test_recommendation_wins_over_the_word_approval(catalogue):
    result = classify("CHMP recommends approval of a CAR-T cell therapy", regulator="EMA", catalogue=catalogue)
    assert result.event == "recommendation"


def test_approval_without_a_named_product_is_a_new_product(catalogue):
    result = classify("FDA approves first cellular therapy for type 1 diabetes", regulator="FDA", catalogue=catalogue)
    assert result.event == "new_product"
    assert result.products == []


def test_approval_of_a_known_product_is_a_new_indication_even_without_indication_words(catalogue):
    result = classify("FDA grants accelerated approval to tisagenlecleucel", regulator="FDA", catalogue=catalogue)
    assert result.event == "new_indication"


def test_known_and_new_product_together_are_a_new_product_unless_a_new_use_is_said(catalogue):
    together = classify("FDA approves Kymriah and obecabtagene autoleucel", regulator="FDA", catalogue=catalogue)
    expanded = classify("Kymriah approval expanded; obecabtagene autoleucel data shown", regulator="FDA",
                        catalogue=catalogue)
    assert together.event == "new_product"
    assert expanded.event == "new_indication"


def test_atmp_news_without_event_words_is_other(catalogue):
    result = classify("Cell and gene therapy roundtable held", catalogue=catalogue)
    assert result.event == "other"
