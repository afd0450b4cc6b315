"""`atmp-monitor classify` and `atmp-monitor eval` as scripts use them: lines in, lines out, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app

DATA = Path(__file__).resolve().parent / "data"
CONTRACT_KEYS = ["is_atmp", "modality", "eu_category", "submodality", "event", "products", "confidence", "reasons"]


@pytest.fixture
def config_dir(tmp_path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(DATA / "classify_catalogue.yaml", folder / "baseline.yaml")
    return folder


def _run(config_dir: Path, *args: str, stdin: bytes | str | None = None):
    return CliRunner().invoke(app, ["--config", str(config_dir), *args], input=stdin)


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def _jsonl(*objects: dict) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


# --- classify ---------------------------------------------------------------------------------------------------

def test_one_object_out_per_line_in_with_exactly_the_contract_fields(config_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(_jsonl(
        {"title": "FDA approves Kymriah for follicular lymphoma", "regulator": "FDA"},
        {"title": "FDA approves Leqembi", "summary": "A monoclonal antibody.", "link": "https://x.test/1",
         "published": "2023-01-06"},
        {"title": "EC authorises Zolgensma", "regulator": "EMA"},
    ), encoding="utf-8")
    result = _run(config_dir, "classify", str(source))
    assert result.exit_code == 0, result.output
    out = _lines(result.output)
    assert [list(o) for o in out] == [CONTRACT_KEYS] * 3
    assert [(o["is_atmp"], o["event"]) for o in out] == [(True, "new_indication"), (False, None), (True, "new_product")]
    assert out[2]["products"] == [{"name": "Zolgensma", "known": False}]


def test_malformed_lines_give_error_objects_in_place_and_exit_1(config_dir):
    stdin = "\n".join([
        json.dumps({"title": "CAR T cell therapy approved"}),
        "{broken",
        "",
        "[1]",
        json.dumps({"title": "   "}),
        json.dumps({"title": "x", "regulator": 7}),
        json.dumps({"title": "Gene therapy approved"}),
    ]) + "\n"
    result = _run(config_dir, "classify", stdin=stdin)
    assert result.exit_code == 1
    out = _lines(result.output)
    assert len(out) == 7
    assert out[0]["is_atmp"] is True and out[6]["is_atmp"] is True
    assert [o.get("error", "").split(":")[0] for o in out[1:6]] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    assert "not valid JSON" in out[1]["error"]
    assert out[2] == {"error": "line 3: blank line"}
    assert "expected a JSON object" in out[3]["error"]
    assert "`title` is required" in out[4]["error"]
    assert "`regulator` must be a string" in out[5]["error"]


def test_dash_reads_standard_input(config_dir):
    result = _run(config_dir, "classify", "-", stdin=_jsonl({"title": "Casgevy approved for thalassaemia"}))
    assert result.exit_code == 0
    assert _lines(result.output)[0]["products"] == [{"name": "Casgevy", "known": True}]


def test_a_line_that_is_not_utf8_is_one_bad_line(config_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"title": "caf\xe9"}\n' + _jsonl({"title": "Cell therapy approved"}).encode())
    result = _run(config_dir, "classify", str(source))
    assert result.exit_code == 1
    out = _lines(result.output)
    assert out[0] == {"error": "line 1: not UTF-8 text"}
    assert out[1]["is_atmp"] is True


def test_the_catalogue_file_is_not_changed(config_dir):
    before = (config_dir / "baseline.yaml").read_bytes()
    _run(config_dir, "classify", stdin=_jsonl({"title": "FDA approves Tecelra (afamitresgene autoleucel)"}))
    assert (config_dir / "baseline.yaml").read_bytes() == before


def test_missing_input_file_exits_2(config_dir, tmp_path):
    result = _run(config_dir, "classify", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_bad_baseline_is_a_config_error(config_dir):
    (config_dir / "baseline.yaml").write_text("products: [1]\n", encoding="utf-8")
    result = _run(config_dir, "classify", stdin=_jsonl({"title": "x"}))
    assert result.exit_code == 2
    assert "config error" in result.output


def test_bad_rules_folder_is_a_config_error(config_dir, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "keywords.yaml").write_text("keywords: []\n", encoding="utf-8")
    result = _run(config_dir, "classify", "--rules", str(rules), stdin=_jsonl({"title": "x"}))
    assert result.exit_code == 2
    assert "missing section(s)" in result.output


def test_the_installed_command_reads_a_pipe(config_dir):
    """The real process, as a shell pipeline would run it."""
    env = {**os.environ, "ATMP_MONITOR_CONFIG": str(config_dir),
           "DATABASE_URL": f"sqlite:///{config_dir / 'no-store-yet.db'}"}
    done = subprocess.run(
        [sys.executable, "-c", "from monitor.cli import main; main()", "classify"],
        input=_jsonl({"title": "FDA approves lifileucel (Amtagvi)", "regulator": "FDA"}).encode(),
        capture_output=True, env=env, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout.decode())[0]["products"] == [{"name": "Amtagvi", "known": False}]


# --- eval ---------------------------------------------------------------------------------------------------------

def test_eval_prints_figures_tables_and_every_miss(config_dir):
    result = _run(config_dir, "eval", str(DATA / "classify_eval.jsonl"))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "precision 0.750 (3/4)" in text and "recall 0.750 (3/4)" in text
    assert "ATMP approvals classified as approvals: 0.750 (3/4)" in text
    assert "field accuracy over the 4 items labelled ATMP:" in text
    assert "  labelled ATMP              3         1" in text
    assert "modality confusion (rows: labelled, columns: got" in text
    assert "misses (6):" in text
    assert "submodality  expected lentiviral" in text


def test_eval_json(config_dir):
    result = _run(config_dir, "eval", "--json", str(DATA / "classify_eval.jsonl"))
    data = json.loads(result.output)
    assert data["approvals"] == {"recall": 0.75, "found": 3, "total": 4}
    assert {"line": 3, "title": "FDA approves CAR T cell therapy for lupus", "field": "is_atmp", "expected": False,
            "got": True} in data["misses"]


def test_eval_shows_hostile_titles_and_labels_safely(config_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(_jsonl({"title": "\x1b[2J CAR T approved", "expected": {"is_atmp": False}},
                             {"title": "FDA approves Kymriah", "expected": {"is_atmp": True, "modality": "\x1b[5m"}}),
                      encoding="utf-8")
    result = _run(config_dir, "eval", str(corpus))
    assert "\x1b" not in result.output
    assert "\\x1b[2J CAR T approved" in result.output
    assert "expected \\x1b[5m" in result.output


def test_eval_bad_corpus_exits_2_naming_the_line(config_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"title": "x", "expected": {"is_atmp": false}}\n{oops\n', encoding="utf-8")
    result = _run(config_dir, "eval", str(corpus))
    assert result.exit_code == 2
    assert "corpus.jsonl:2: not valid JSON" in result.output
