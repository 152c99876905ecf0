"""Job config validation: every problem names its key and what was expected; exit code 2; nothing runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from audit.jobs import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "audit.toml"

GOOD = """
job = "nightly"
output_dir = "out"

[[targets]]
name = "sim"
builtin = "refusal-token-sim"

[[prompt_sets]]
name = "p"
path = "prompts.jsonl"
harmful = true
"""


def write(tmp_path: Path, body: str, prompts: str = '{"prompt": "How do I pick a lock?", "category": "c"}\n') -> Path:
    (tmp_path / "prompts.jsonl").write_text(prompts, encoding="utf-8")
    cfg = tmp_path / "audit.toml"
    cfg.write_text(textwrap.dedent(body), encoding="utf-8")
    return cfg


def problems(tmp_path, body) -> dict[str, str]:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, body))
    return dict(ei.value.problems)


def test_example_config_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.job == "example-nightly"
    assert {t.builtin for t in cfg.targets} == {"replay", "refusal-token-sim"}
    assert cfg.contrast.enabled and cfg.contrast.path.name == "coconot_contrast_eval.jsonl"
    assert cfg.tense.enabled and cfg.tense.reformulator is None
    # relative paths are relative to the config file's folder
    assert cfg.output_dir == (REPO / "audit-out").resolve()


def test_good_minimal_config_and_out_override(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), output_dir=tmp_path / "elsewhere")
    assert cfg.output_dir == (tmp_path / "elsewhere").resolve()
    assert cfg.budget.samples == 1 and cfg.alerts.min_change == 0.10


@pytest.mark.parametrize(
    "edit, key, expected",
    [
        (("[[prompt_sets]]", "[budget]\nsamples = 0\n\n[[prompt_sets]]"), "budget.samples", "expected an integer from 1 to 100, got an integer 0"),
        (("[[prompt_sets]]", "[budget]\ntemperature = \"hot\"\n\n[[prompt_sets]]"), "budget.temperature", "expected a number in [0.0, 2.0]"),
        (('job = "nightly"', 'job = "night ly!"'), "job", "expected a name of letters"),
        (('builtin = "refusal-token-sim"', 'builtin = "echo"'), "targets[0].builtin", "expected one of 'replay', 'refusal-token-sim'"),
        (('path = "prompts.jsonl"', 'path = "missing.jsonl"'), "prompt_sets[0].path", "expected the path of an existing file"),
        (("[[prompt_sets]]", "[alerts]\nmin_change = 1.5\n\n[[prompt_sets]]"), "alerts.min_change", "expected a number in [0.0, 1.0], got a float 1.5"),
        (("[[prompt_sets]]", "[alerts]\nwebhook_url_env = \"https://hooks.example/x\"\n\n[[prompt_sets]]"), "alerts.webhook_url_env", "the NAME of an environment variable"),
        (("[[prompt_sets]]", "[budget]\nsampels = 2\n\n[[prompt_sets]]"), "budget.sampels", "unknown key; expected one of"),
        (("[[prompt_sets]]", "[probes.tense]\nenabled = true\nreformulator = \"nobody\"\n\n[[prompt_sets]]"), "probes.tense.reformulator", "unknown target 'nobody'"),
        (("[[prompt_sets]]", "[probes.tense]\ntenses = [\"present\"]\n\n[[prompt_sets]]"), "probes.tense.tenses", "expected 'past' and/or 'future', got 'present'"),
        (('builtin = "refusal-token-sim"', 'builtin = "refusal-token-sim"\noptions = { temperature = -1.0 }'), "targets[0].options", "temperature: must be > 0"),
        (('builtin = "refusal-token-sim"', 'provider = "openai"'), "targets[0].base_url", "missing; expected the API base URL"),
        (('builtin = "refusal-token-sim"', 'provider = "openai"\nbase_url = "http://x"\napi_key_env = "sk-live-123"'), "targets[0].api_key_env", "the NAME of an environment variable"),
    ],
)
def test_errors_name_the_key_and_the_expectation(tmp_path, edit, key, expected):
    body = GOOD.replace(*edit)
    assert body != GOOD
    found = problems(tmp_path, body)
    assert key in found, found
    assert expected in found[key], found[key]


def test_all_problems_reported_at_once(tmp_path):
    body = GOOD.replace('job = "nightly"', "").replace('output_dir = "out"', "") + "\n[budget]\nconcurrency = 0\n"
    found = problems(tmp_path, body)
    assert set(found) >= {"job", "output_dir", "budget.concurrency"}
    assert found["job"].startswith("missing; expected a name")
    assert "--out" in found["output_dir"]


def test_missing_targets_and_duplicates(tmp_path):
    found = problems(tmp_path, 'job = "j"\noutput_dir = "o"\n[[prompt_sets]]\nname = "p"\npath = "prompts.jsonl"\n')
    assert "expected at least one [[targets]]" in found["targets"]
    body = GOOD + '\n[[targets]]\nname = "sim"\nbuiltin = "replay"\n'
    assert "used more than once" in problems(tmp_path, body)["targets"]


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "job = \n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_cli_exit_2_on_bad_config_and_nothing_runs(tmp_path):
    cfg = write(tmp_path, GOOD.replace('builtin = "refusal-token-sim"', 'builtin = "nope"'))
    res = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'a.db'}", "run", str(cfg)])
    assert res.exit_code == 2
    assert "targets[0].builtin: expected one of" in res.output
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "out").exists()


def test_cli_exit_2_on_bad_prompt_line_and_bad_date(tmp_path):
    cfg = write(tmp_path, GOOD, prompts='{"prompt": "ok"}\n{"prompt": ""}\n')
    res = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'a.db'}", "run", str(cfg), "--date", "2026-01-01"])
    assert res.exit_code == 2
    assert "prompts.jsonl:2: prompt:" in res.output
    cfg = write(tmp_path, GOOD)
    res = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'a.db'}", "run", str(cfg), "--date", "2026-13-45"])
    assert res.exit_code == 2
    assert "--date: expected a date YYYY-MM-DD" in res.output
