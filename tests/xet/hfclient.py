"""Run the real huggingface_hub + hf_xet client against a BastionServer, in a subprocess.

tests/conftest.py sets HF_HUB_DISABLE_XET=1 for this process and huggingface_hub reads it at import
time, so Xet runs happen in a child process with a clean environment; results come back as JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import BastionServer

_XORB_LOG = re.compile(r"xet xorb upload repo=(\d+) xorb=\w+ bytes=(\d+)")
_STRIPPED = ("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_IMPLICIT_TOKEN")


def client_env(server: BastionServer, token: str, hf_home: Path, *, xet: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED}
    env.update({"HF_ENDPOINT": server.url, "HF_TOKEN": token, "HF_HOME": str(hf_home),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    return env


def run_python(server: BastionServer, token: str, hf_home: Path, code: str, *, xet: bool = True,
               timeout: int = 600) -> Any:
    """Run `code` in a child interpreter; it must print one JSON document as its last output line."""
    prelude = "import json, hashlib, os, sys\nfrom huggingface_hub import constants\n" \
              f"assert constants.HF_HUB_DISABLE_XET is {not xet}\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code], env=client_env(server, token, hf_home, xet=xet),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n"
                             f"--- server log ---\n{server.server_log()[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cli(server: BastionServer, token: str, hf_home: Path, *args: str, timeout: int = 600) -> str:
    hf = Path(sys.executable).with_name("hf")
    proc = subprocess.run([str(hf), *args], env=client_env(server, token, hf_home), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"hf {' '.join(args)} failed:\n{proc.stderr[-6000:]}")
    return proc.stdout


def log_mark(server: BastionServer) -> int:
    return len(server.server_log())


def xorb_bytes_since(server: BastionServer, mark: int) -> int:
    """Bytes the server received in xorb uploads after `mark` (its log lines, one per xorb POST)."""
    return sum(int(m.group(2)) for m in _XORB_LOG.finditer(server.server_log()[mark:]))


def reconstructions_since(server: BastionServer, mark: int) -> int:
    return server.server_log()[mark:].count("xet reconstruction ")


def sha256_file(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_like(seed: int, size: int) -> bytes:
    """Bytes that compress a little, like weights: random mantissas, regular exponents."""
    import random

    rng = random.Random(seed)
    raw = bytearray(rng.randbytes(size))
    raw[3::4] = bytes([0x3F]) * len(raw[3::4])
    return bytes(raw)
