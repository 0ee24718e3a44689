"""The NeMo config scanner: Hydra `_target_` values in a `model_config.yaml` (what a .nemo archive holds).

NeMo restores a model by reading `model_config.yaml` and handing it to Hydra, which imports and calls every
`_target_` it finds (the model class, its preprocessor, optimiser, data loaders ...): a target is an arbitrary
callable. Targets are judged with the pickle scanner's import policy (bastion.scanning.scanners.pickles.policy):
one that reaches a dangerous path (os, subprocess, builtins.eval, torch.load, an attribute walk into one of
them) is unsafe; one outside the `nemo.` / `torch.` / `omegaconf.` packages is suspicious, naming it. The
YAML is parsed with yaml.safe_load (no Python tags), at most MAX_BYTES of it, and walked at most MAX_NODES.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bastion.scanning.results import ImportSafety, ScanResult
from bastion.scanning.scanners.format_report import FormatReport
from bastion.scanning.scanners.pickles.policy import classify, is_dotted_identifier

NAME = "nemo-config"
VERSION = "1"
FILE_NAME = "model_config.yaml"
MAX_BYTES = 4 << 20
MAX_NODES = 1_000_000
MAX_LISTED = 50
ALLOWED_PREFIXES = ("nemo.", "torch.", "omegaconf.")
TARGET_KEYS = ("_target_",)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def scan_path(path: Path) -> ScanResult:
    report = FormatReport(NAME)
    size = path.stat().st_size
    if size > MAX_BYTES:
        report.error("", f"config of {size} bytes is over the {MAX_BYTES}-byte limit: not examined")
        return report.result(VERSION)
    try:
        config = yaml.load(path.read_bytes(), Loader=_LOADER)  # noqa: S506 - a safe loader (C or Python)
    except yaml.YAMLError as exc:
        # NeMo could not restore it either, but what it would instantiate is unknown: not safe.
        report.suspicious("", f"unreadable YAML: {str(exc)[:200]}")
        return report.result(VERSION)
    targets = _walk(config, report)
    report.info["targets"] = sorted(targets)[:MAX_LISTED]
    return report.result(VERSION)


def _walk(config: Any, report: FormatReport) -> set[str]:
    """Every `_target_` in the config, each judged once per location; aliases are walked once."""
    targets: set[str] = set()
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(config, "")]
    nodes = 0
    while stack:
        node, where = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            report.error(where, f"more than {MAX_NODES} config nodes: not all targets examined")
            break
        if isinstance(node, dict):
            if id(node) in seen:
                continue
            seen.add(id(node))
            for key, value in node.items():
                here = f"{where}.{key}" if where else str(key)
                if key in TARGET_KEYS:
                    judge_target(value, here, report)
                    targets.add(str(value)[:200])
                stack.append((value, here))
        elif isinstance(node, list):
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend((value, f"{where}[{i}]") for i, value in enumerate(node))
    return targets


def judge_target(target: Any, where: str, report: FormatReport) -> None:
    if not isinstance(target, str):
        report.suspicious(where, f"_target_ is a {type(target).__name__}, not a dotted name")
        return
    # Hydra imports the longest importable prefix and walks the rest as attributes: judge the first
    # component as the module and the rest as an attribute path, so a walk into os is seen anywhere.
    module, _, rest = target.strip().partition(".")
    verdict = classify(module, rest)
    shown = target[:200]
    if verdict.safety is ImportSafety.DANGEROUS:
        report.unsafe(where, f"_target_ {shown!r}: {verdict.reason}; Hydra calls it when the model loads")
    elif not (target.startswith(ALLOWED_PREFIXES) and is_dotted_identifier(target)):
        report.suspicious(where, f"_target_ {shown!r} is outside the nemo, torch and omegaconf packages "
                                 "(Hydra imports and calls it when the model loads)")
