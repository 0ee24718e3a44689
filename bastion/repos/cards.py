"""Repo cards (README.md): the YAML metadata block checked as the Hub checks it, in validate-yaml,
preupload and the commit path, so a card the Hub would refuse is refused before anything is written.

Only the fields whose type the Hub's tools rely on are checked (a card may carry any other key);
the walk is bounded by the card's size (MAX_CARD) and never follows more than the known fields.
"""

from __future__ import annotations

import re

import yaml

from bastion.errors import BadRequest

CARD_PATH = "README.md"
MAX_CARD = 8 << 20
# The client's own pattern for the block (huggingface_hub.repocard.REGEX_YAML_BLOCK): leading blank lines
# are allowed before the opening `---`.
_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
EMPTY_METADATA = ("Empty or missing yaml metadata in repo card "
                  "(https://huggingface.co/docs/hub/model-cards#model-card-metadata)")
# Fields that are a string or a list of strings on every repo type.
_STRINGS_OR_LISTS = ("tags", "datasets", "metrics", "language", "base_model", "license", "license_name")
_STRINGS = ("pipeline_tag", "library_name", "license_link", "thumbnail", "pretty_name")


def _string_or_strings(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _model_index_problems(value: object) -> list[str]:
    if not isinstance(value, list):
        return ['"model-index" must be an array']
    problems = []
    for i, entry in enumerate(value[:100]):
        where = f'"model-index[{i}]"'
        if not isinstance(entry, dict):
            problems.append(f"{where} must be an object")
            continue
        if not isinstance(entry.get("name"), str):
            problems.append(f'{where}.name must be a string')
        results = entry.get("results")
        if not isinstance(results, list):
            problems.append(f"{where}.results must be an array")
            continue
        for j, result in enumerate(results[:100]):
            at = f"{where}.results[{j}]"
            if not isinstance(result, dict):
                problems.append(f"{at} must be an object")
                continue
            task = result.get("task")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                problems.append(f"{at}.task.type must be a string")
            metrics = result.get("metrics", [])
            if not isinstance(metrics, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                        for m in metrics):
                problems.append(f"{at}.metrics must be an array of objects with a string type")
    return problems


def metadata_problems(content: str, repo_type: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) about `content`'s metadata block; the Hub refuses a card with errors and
    accepts one with warnings only (no block, or an empty one)."""
    if len(content) > MAX_CARD:
        return [f"{CARD_PATH} is larger than {MAX_CARD} bytes"], []
    match = _BLOCK.match(content)
    if match is None:
        return [], [EMPTY_METADATA]
    try:
        meta = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return [f"Invalid YAML metadata: {' '.join(str(exc).split())}"], []
    if meta is None or meta == {}:
        return [], [EMPTY_METADATA]
    if not isinstance(meta, dict):
        return ["YAML metadata must be a mapping"], []
    errors = []
    for key in _STRINGS_OR_LISTS:
        if key in meta and meta[key] is not None and not _string_or_strings(meta[key]):
            errors.append(f'"{key}" must be a string or an array of strings')
    for key in _STRINGS:
        if key in meta and meta[key] is not None and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if repo_type == "model" and "model-index" in meta:
        errors += _model_index_problems(meta["model-index"])
    return errors, []


def check_card(content: bytes, repo_type: str) -> None:
    """Refuse a README.md whose metadata the Hub would refuse (400, the client's "Invalid metadata")."""
    text = content.decode("utf-8", "replace")
    errors, _warnings = metadata_problems(text, repo_type)
    if errors:
        raise BadRequest(f"Invalid metadata in {CARD_PATH}.\n" + "\n".join(f"- {e}" for e in errors[:20]),
                         extra={"errors": [{"message": e} for e in errors[:20]]})
