"""The shipped baseline holds what the regulators approved by the end of 2023, and names are found reliably."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from monitor.catalogue import MODALITIES, Catalogue, load_baseline, name_key, without_fda_suffix
from monitor.config import ConfigError
from monitor.models import Product

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "config" / "baseline.yaml"
END_OF_2023 = date(2023, 12, 31)

EMA_TO_2023 = {
    "ChondroCelect", "Glybera", "MACI", "Provenge", "Holoclar", "Imlygic", "Strimvelis", "Zalmoxis", "Spherox",
    "Alofisel", "Kymriah", "Yescarta", "Luxturna", "Zynteglo", "Zolgensma", "Libmeldy", "Tecartus", "Skysona",
    "Abecma", "Breyanzi", "Carvykti", "Upstaza", "Roctavian", "Ebvallo", "Hemgenix",
}


@pytest.fixture(scope="module")
def baseline() -> list[Product]:
    return load_baseline(BASELINE)


@pytest.fixture(scope="module")
def catalogue(baseline) -> Catalogue:
    return Catalogue(baseline)


def _names(products: list[Product]) -> list[tuple[str, str]]:
    return [(p.regulator, p.trade_name) for p in products]


# --- the shipped baseline ---------------------------------------------------------------------------------------

def test_fda_items_are_the_34_on_fdas_list_to_the_end_of_2023(baseline):
    fda = [p for p in baseline if p.regulator == "FDA"]
    assert len(fda) == 34
    assert all(p.approval_date is not None and p.approval_date <= END_OF_2023 for p in fda)


def test_the_seven_fda_approvals_of_2023_are_present(baseline):
    of_2023 = {p.trade_name.upper() for p in baseline if p.regulator == "FDA" and p.approval_date.year == 2023}
    assert of_2023 == {"CASGEVY", "ELEVIDYS", "LANTIDRA", "LYFGENIA", "OMISIRGE", "ROCTAVIAN", "VYJUVEK"}


def test_fda_list_includes_cord_blood_and_tissue_products_but_not_2024_ones(catalogue):
    fda = {p.trade_name for p in catalogue.products("FDA")}
    assert {"Hemacord", "Allocord", "Ducord", "Clevecord", "Laviv", "MACI", "Gintuit", "StrataGraft",
            "Rethymic", "Provenge"} <= fda
    cord_blood = [p for p in catalogue.products("FDA") if p.proper_name == "HPC, Cord Blood"]
    assert len(cord_blood) == 8
    assert "Amtagvi" not in fda


def test_ema_items_are_the_eu_authorisations_to_the_end_of_2023(catalogue):
    ema = catalogue.products("EMA")
    assert {p.trade_name for p in ema} == EMA_TO_2023
    assert all(p.approval_date is not None and p.approval_date <= END_OF_2023 for p in ema)
    assert catalogue.lookup("Casgevy", "EMA") is None


def test_recolorcell_is_under_ir_fda(catalogue):
    product = catalogue.lookup("ReColorCell")
    assert product is not None
    assert (product.regulator, product.modality, product.approval_date.year) == ("IR-FDA", "cell_therapy", 2023)


def test_every_item_has_a_modality_and_an_approval_date(baseline):
    assert all(p.modality in MODALITIES and p.approval_date is not None for p in baseline)


def test_product_approved_by_both_regulators_has_one_item_each(catalogue):
    assert catalogue.regulators_of("Kymriah") == {"FDA", "EMA"}
    assert [p.regulator for p in catalogue.products() if p.trade_name == "Kymriah"] == ["FDA", "EMA"]


def test_demo_config_carries_the_same_baseline():
    assert (ROOT / "examples" / "config" / "baseline.yaml").read_text() == BASELINE.read_text()


# --- names --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "core"), [
    ("onasemnogene abeparvovec-xioi", "onasemnogene abeparvovec"),
    ("allogeneic processed thymus tissue-agdc", "allogeneic processed thymus tissue"),
    ("remestemcel-L-rknd", "remestemcel-L"),
    ("omidubicel-onlv", "omidubicel"),
    ("sipuleucel-T", None),
    ("tisagenlecleucel", None),
    ("exa-cel", None),
    ("ONASEMNOGENE ABEPARVOVEC-XIOI", None),
])
def test_fda_suffix_is_four_lower_case_letters_after_the_last_hyphen(name, core):
    assert without_fda_suffix(name) == core


def test_name_key_ignores_case_punctuation_spacing_and_trademarks():
    assert name_key("KYMRIAH®") == name_key("Kymriah") == "kymriah"
    assert name_key("CTX-001") == name_key("ctx001") == name_key("CTX 001")


@pytest.mark.parametrize(("name", "regulator", "expected"), [
    ("Zolgensma", "FDA", "Zolgensma"),
    ("onasemnogene abeparvovec-xioi", "FDA", "Zolgensma"),
    ("onasemnogene abeparvovec", "FDA", "Zolgensma"),
    ("ONASEMNOGENE ABEPARVOVEC-XIOI", "FDA", "Zolgensma"),
    ("  Onasemnogene   Abeparvovec ", "EMA", "Zolgensma"),
    ("exa-cel", "FDA", "Casgevy"),
    ("exagamglogene autotemcel", "FDA", "Casgevy"),
    ("SRP-9001", "FDA", "Elevidys"),
    ("srp 9001", "FDA", "Elevidys"),
    ("AMT-061", "EMA", "Hemgenix"),
    ("donislecel", "FDA", "Lantidra"),
    ("casgevy", "FDA", "Casgevy"),
    ("Lenmeldy", "EMA", "Libmeldy"),
])
def test_lookup_by_trade_name_proper_name_and_alias(catalogue, name, regulator, expected):
    product = catalogue.lookup(name, regulator)
    assert product is not None
    assert (product.regulator, product.trade_name) == (regulator, expected)


def test_lookup_without_regulator_gives_the_earliest_approval(catalogue):
    assert catalogue.lookup("tisagenlecleucel").regulator == "FDA"
    assert catalogue.lookup("Glybera").regulator == "EMA"


def test_lookup_with_other_regulator_or_unknown_name_is_none(catalogue):
    assert catalogue.lookup("Lantidra", "EMA") is None
    assert catalogue.lookup("Amtagvi") is None
    assert catalogue.lookup("®") is None


def test_shared_generic_name_identifies_no_single_licence_but_says_who_approved_it(catalogue):
    assert catalogue.lookup("HPC, Cord Blood") is None
    assert catalogue.regulators_of("HPC, Cord Blood") == {"FDA"}
    assert catalogue.lookup("Hemacord").proper_name == "HPC, Cord Blood"
    assert catalogue.lookup("hpc cord blood bloodworks").sponsor == "Bloodworks"


def test_regulators_of_unknown_name_is_empty(catalogue):
    assert catalogue.regulators_of("Amtagvi") == set()


# --- free text ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "regulator", "expected"), [
    ("FDA Approves First Gene Therapies to Treat Patients with Sickle Cell Disease. The approvals of Casgevy and "
     "Lyfgenia represent...", "FDA", [("FDA", "Casgevy"), ("FDA", "Lyfgenia")]),
    ("Novartis: KYMRIAH® (tisagenlecleucel) label updated; Kymriah's boxed warning now covers T cell malignancies",
     "FDA", [("FDA", "Kymriah")]),
    ("CHMP recommends extension of indication for Yescarta (axicabtagene ciloleucel)", "EMA", [("EMA", "Yescarta")]),
    ("Zolgensma™ (onasemnogene abeparvovec-xioi) suspension for intravenous infusion: safety labeling change",
     "FDA", [("FDA", "Zolgensma")]),
    ("Sarepta's SRP-9001 gene therapy; later compared with Roctavian and HEMGENIX", "FDA",
     [("FDA", "Elevidys"), ("FDA", "Roctavian"), ("FDA", "Hemgenix")]),
    ("Vertex and CRISPR Therapeutics announce exa-cel data", None, [("FDA", "Casgevy")]),
    ("Kymriah", None, [("FDA", "Kymriah"), ("EMA", "Kymriah")]),
    ("Iranian FDA authorises ReColorCell for vitiligo", "IR-FDA", [("IR-FDA", "ReColorCell")]),
    ("New cord blood licence: Clevecord (HPC, Cord Blood) from Cleveland", "FDA", [("FDA", "Clevecord")]),
])
def test_find_in_text_names_products_once_in_order_of_mention(catalogue, text, regulator, expected):
    assert _names(catalogue.find_in_text(text, regulator)) == expected


@pytest.mark.parametrize("text", [
    "A Provengeful quarter for the company",
    "Public cord blood banking rises; FDA licenses HPC, Cord Blood from a new bank",
    "New gene therapy for sickle cell disease submitted",
    "CAR-T cell therapy shows durable remissions",
    "Autologous cultured chondrocytes for knee cartilage defects",
    "Macintosh users report an update",
    "Thymus tissue research grant awarded",
])
def test_find_in_text_does_not_match_generic_words(catalogue, text):
    assert catalogue.find_in_text(text) == []


def test_find_in_text_regulator_filter_leaves_out_other_regulators(catalogue):
    assert catalogue.find_in_text("Lantidra islet cells approved", "EMA") == []


def test_added_product_is_found_in_text_after_earlier_searches():
    catalogue = Catalogue([Product(regulator="FDA", trade_name="Kymriah")])
    assert catalogue.find_in_text("Amtagvi (lifileucel) approved") == []
    assert catalogue.add(Product(regulator="FDA", trade_name="Amtagvi", proper_name="lifileucel"))
    assert _names(catalogue.find_in_text("lifileucel approved, unlike Kymriah")) == [("FDA", "Amtagvi"),
                                                                                    ("FDA", "Kymriah")]


def test_add_refuses_a_second_product_of_the_same_trade_name_and_regulator():
    catalogue = Catalogue([Product(regulator="FDA", trade_name="Kymriah", proper_name="tisagenlecleucel")])
    assert not catalogue.add(Product(regulator="fda", trade_name="KYMRIAH", proper_name="something else"))
    assert catalogue.add(Product(regulator="EMA", trade_name="Kymriah"))
    assert len(catalogue) == 2
    assert catalogue.lookup("something else") is None


def test_short_names_are_looked_up_but_not_searched_in_text():
    catalogue = Catalogue([Product(regulator="FDA", trade_name="Longname", aliases=("TX",))])
    assert catalogue.lookup("tx").trade_name == "Longname"
    assert catalogue.find_in_text("TX and OK are US states") == []


def test_empty_catalogue_finds_nothing():
    assert Catalogue().find_in_text("Kymriah") == []


# --- loading and validation ---------------------------------------------------------------------------------------

GOOD = """\
products:
  - regulator: FDA
    trade_name: Kymriah
    proper_name: tisagenlecleucel
    aliases: [CTL019]
    approval_date: 2017-08-30
    modality: gene_modified_cell_therapy
    submodality: car_t
  - regulator: EMA
    trade_name: Kymriah
    approval_date: "2018-08-22"
    note: date unverified
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "baseline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_baseline_reads_every_field(tmp_path):
    fda, ema = load_baseline(_write(tmp_path, GOOD))
    assert fda == Product(regulator="FDA", trade_name="Kymriah", proper_name="tisagenlecleucel", aliases=("CTL019",),
                          approval_date=date(2017, 8, 30), modality="gene_modified_cell_therapy",
                          submodality="car_t")
    assert (ema.approval_date, ema.note) == (date(2018, 8, 22), "date unverified")


BAD = {
    "unknown key": ("    trade_name: Kymriah\n    aproval_date: 2017-08-30\n", "unknown key", "'Kymriah'"),
    "missing trade name": ("    proper_name: tisagenlecleucel\n", "trade_name", "product #2"),
    "impossible date": ('    trade_name: Kymriah\n    approval_date: "2017-02-30"\n', "out of range", "'Kymriah'"),
    "month only": ("    trade_name: Kymriah\n    approval_date: 2017-08\n", "YYYY-MM-DD", "'Kymriah'"),
    "date and time": ("    trade_name: Kymriah\n    approval_date: 2017-08-30 10:00:00\n", "not a date", "Kymriah"),
    "unknown modality": ("    trade_name: Kymriah\n    modality: car_t\n", "modality", "'Kymriah'"),
    "punctuation only name": ("    trade_name: '®'\n", "not a usable name", "'®'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_item_names_file_line_and_product(tmp_path, case):
    body, message, entry = BAD[case]
    path = _write(tmp_path, "products:\n  - regulator: FDA\n    trade_name: Provenge\n  - regulator: FDA\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_baseline(path)
    assert caught.value.path == path
    assert caught.value.line == 4
    assert message in str(caught.value)
    assert entry in caught.value.entry
    assert str(path) in str(caught.value)


def test_duplicate_trade_name_within_a_regulator_is_an_error(tmp_path):
    path = _write(tmp_path, GOOD + "  - regulator: FDA\n    trade_name: KYMRIAH\n")
    with pytest.raises(ConfigError) as caught:
        load_baseline(path)
    assert caught.value.line == 13
    assert "first defined on line 2" in str(caught.value)


def test_lower_case_regulator_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="regulator"):
        load_baseline(_write(tmp_path, "products:\n  - regulator: fda\n    trade_name: Kymriah\n"))


def test_file_without_products_list_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="products"):
        load_baseline(_write(tmp_path, "product:\n  - regulator: FDA\n"))
