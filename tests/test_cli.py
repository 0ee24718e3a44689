"""The command-line contract: bastion --version, admin commands, and the hf CLI against Bastion."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx

from bastion import __version__
from tests.conftest import BastionServer, MiB, hf_api

HF = str(Path(sys.executable).with_name("hf"))


def test_version(server: BastionServer) -> None:
    out = server.cli("--version").stdout
    assert __version__ in out


def test_admin_commands_work_against_a_running_server(server: BastionServer) -> None:
    server.cli("admin", "create-user", "carol", "--email", "carol@example.com", "--fullname", "Carol Q", "--admin")
    token = server.cli("admin", "create-token", "carol", "--name", "ci", "--role", "read").stdout
    assert token.endswith("\n") and token.count("\n") == 1  # only the token on stdout
    me = httpx.get(f"{server.url}/api/whoami-v2", headers={"authorization": f"Bearer {token.strip()}"}).json()
    assert me["name"] == "carol" and me["fullname"] == "Carol Q"
    assert me["auth"]["accessToken"] == {"displayName": "ci", "role": "read", "createdAt": me["auth"]["accessToken"]
                                         ["createdAt"]}
    dup = server.cli("admin", "create-user", "Carol", "--email", "c2@example.com", check=False)
    assert dup.returncode != 0 and "already taken" in dup.stderr
    bad = server.cli("admin", "create-token", "nobody-here", "--name", "x", check=False)
    assert bad.returncode != 0 and "not found" in bad.stderr


def test_data_dir_flag_and_env_agree(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    run = [sys.executable, "-m", "bastion.cli", "admin"]
    subprocess.run([*run, "create-user", "dave", "--email", "d@example.com", "--data-dir", str(tmp_path)], env=env,
                   check=True, capture_output=True)
    out = subprocess.run([*run, "create-token", "dave", "--name", "t"], env={**env, "BASTION_DATA_DIR": str(tmp_path)},
                         check=True, capture_output=True, text=True)
    assert out.stdout.startswith("bst_")
    assert (tmp_path / "bastion.sqlite3").exists()


def test_hf_cli_upload_and_download(server: BastionServer, user: tuple[str, str], tmp_path: Path) -> None:
    name, token = user
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": token, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0"}
    src = tmp_path / "up"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(12 * MiB))
    (src / "notes.txt").write_text("notes\n")
    repo_id = f"{name}/cli-repo"
    subprocess.run([HF, "upload", repo_id, str(src), ".", "--private"], env=env, check=True, capture_output=True,
                   timeout=300)
    assert hf_api(server, token).model_info(repo_id).private is True
    dest = tmp_path / "down"
    subprocess.run([HF, "download", repo_id, "--local-dir", str(dest)], env=env, check=True, capture_output=True,
                   timeout=300)
    for f in ("weights.bin", "notes.txt"):
        assert hashlib.sha256((dest / f).read_bytes()).digest() == hashlib.sha256((src / f).read_bytes()).digest()
    subprocess.run([HF, "download", repo_id, "notes.txt", "--local-dir", str(tmp_path / "one")], env=env,
                   check=True, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "one" / "notes.txt").read_text() == "notes\n"
    assert not (tmp_path / "one" / "weights.bin").exists()
    who = subprocess.run([HF, "auth", "whoami"], env=env, check=True, capture_output=True, text=True)
    assert name in who.stdout
