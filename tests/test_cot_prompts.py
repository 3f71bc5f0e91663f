"""Prompt templates: loading, version and hash stability, rendering, and the examples against the schema."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from cot_prompts import PromptTemplate, available_versions, load_prompt
from cot_prompts.prompt import templates_dir

REPO = Path(__file__).resolve().parents[1]


def _v1_data() -> dict:
    return yaml.safe_load((templates_dir() / "v1.yaml").read_text(encoding="utf-8"))


def test_v1_loads_with_version_and_sha256_hash():
    prompt = load_prompt("v1")
    assert prompt.version == "v1"
    assert len(prompt.hash) == 64 and int(prompt.hash, 16) >= 0
    assert "v1" in available_versions()


def test_hash_is_stable_across_loads_and_file_layout(tmp_path):
    first, second = load_prompt("v1"), load_prompt("v1")
    assert first.hash == second.hash
    # The same content written with another key order, comments and flow style hashes the same.
    data = _v1_data()
    reordered = dict(reversed(list(data.items())))
    (tmp_path / "v1.yaml").write_text(
        "# another layout\n" + yaml.safe_dump(reordered, sort_keys=False, width=60)
    )
    assert load_prompt("v1", directory=tmp_path).hash == first.hash


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(system=d["system"] + " Be brief."),
        lambda d: d["examples"][0].update(cot=d["examples"][0]["cot"].replace("two", "three")),
        lambda d: d["schema"]["properties"]["cot"].update(maxLength=400),
        lambda d: d["generation"].update(temperature=0.3),
        lambda d: d["feedback"].update(empty_answer="Answer again."),
    ],
    ids=["system", "example", "schema", "generation", "feedback"],
)
def test_any_content_change_changes_the_hash(edit):
    data = _v1_data()
    edit(data)
    assert PromptTemplate.from_mapping(data).hash != load_prompt("v1").hash


def test_content_is_frozen_against_later_edits_of_the_source_mapping():
    data = _v1_data()
    prompt = PromptTemplate.from_mapping(data)
    data["system"] = "changed"
    assert prompt.content["system"] != "changed"
    schema = prompt.schema
    schema["properties"].clear()
    assert prompt.schema["properties"], "schema must be handed out as a copy"


def test_unknown_version_and_mismatched_file_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt version"):
        load_prompt("v999")
    data = _v1_data()
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(data))  # says version v1 inside
    with pytest.raises(ValueError, match="version is 'v2'"):
        load_prompt("v2", directory=tmp_path)


def test_incomplete_templates_are_rejected():
    data = _v1_data()
    del data["feedback"]["cot_too_long"]
    with pytest.raises(ValueError, match="feedback"):
        PromptTemplate.from_mapping(data)
    data = _v1_data()
    data["schema"]["additionalProperties"] = True
    with pytest.raises(ValueError, match="additionalProperties"):
        PromptTemplate.from_mapping(data)


def test_schema_is_strict_and_bounded():
    schema = load_prompt("v1").schema
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["caption", "cot"]
    for name in ("caption", "cot"):
        assert schema["properties"][name]["maxLength"] > 0
    assert schema["properties"]["events"]["items"]["additionalProperties"] is False


def test_examples_are_valid_answers_in_thinksound_style():
    prompt = load_prompt("v1")
    validator = Draft202012Validator(prompt.schema)
    examples = prompt.content["examples"]
    assert len(examples) >= 3
    for example in examples:
        validator.validate(example)
        assert example["cot"].startswith("Start with")
        assert "avoid" in example["cot"].lower()
        assert 3 <= example["cot"].count(". ") + 1 <= 4
        # Roughly 1.3 T5 tokens per English word: the examples must model CoTs that fit 77 tokens.
        assert len(example["cot"].split()) * 1.3 < 76
    system = prompt.system_text()
    for example in examples:
        assert json.dumps(example, sort_keys=True, ensure_ascii=False, separators=(",", ":")) in system


def test_instruction_renders_duration_frames_and_user_caption():
    prompt = load_prompt("v1")
    text = prompt.instruction_text(duration_sec=8.0, frame_times=[0.5, 1.5, 2.5], caption="dog barking")
    assert "8.0 seconds" in text and "3 frames" in text and "0.5, 1.5, 2.5" in text
    assert '"dog barking"' in text
    as_video = prompt.instruction_text(duration_sec=4.25, frame_times=None, caption=None)
    assert "as a video" in as_video and "labelled" not in as_video and "4.2 seconds" in as_video


def test_cot_prompts_imports_no_pipeline_packages():
    code = (
        "import sys, cot_prompts;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'duckdb', 'minio', 'storage', 'tasks', 'flows', 'thinksound'});"
        "print(','.join(bad))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_deepcopy_of_template_keeps_hash():
    prompt = load_prompt("v1")
    assert copy.deepcopy(prompt).hash == prompt.hash
