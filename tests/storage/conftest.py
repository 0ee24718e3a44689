"""An S3-protocol server for the storage tests: moto's standalone server (`moto[server]`) in a process of
its own on a free loopback port, started once per test session. Every test gets fresh buckets."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BastionServer, ClamdServer, MiB, free_port

ACCESS_KEY, SECRET_KEY = "bastion-test-key", "bastion-test-secret"


class MotoServer:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def new_bucket(self, label: str = "b") -> str:
        name = f"bastion-{label}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_settings(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """An S3 store's settings as BASTION_REGIONS takes them."""
        return {"type": "s3", "bucket": bucket, "endpoint_url": self.url, "region_name": "us-east-1",
                "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "addressing_style": "path",
                "max_attempts": 3, **extra}

    def keys(self, bucket: str) -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out += [item["Key"] for item in page.get("Contents", [])]
        return out


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


def regions_env(regions: dict[str, Any]) -> dict[str, str]:
    return {"BASTION_REGIONS": json.dumps(regions)}


@pytest.fixture(scope="session")
def buckets(moto: MotoServer) -> dict[str, str]:
    return {"eu": moto.new_bucket("eu"), "us": moto.new_bucket("us")}


@pytest.fixture(scope="session")
def region_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer, moto: MotoServer,
                  buckets: dict[str, str]) -> Iterator[BastionServer]:
    """A server with three regions: `default` (the data dir), `eu` and `us` (an S3 bucket each, `eu` with
    server-side encryption and a key prefix; parts of 5 MiB so multipart uploads happen)."""
    small_parts = {"multipart_threshold": 5 * MiB, "multipart_chunk_size": 5 * MiB}
    regions = {"default": {},
               "eu": {"store": moto.store_settings(buckets["eu"], sse="AES256", prefix="bastion", **small_parts)},
               "us": {"store": moto.store_settings(buckets["us"], **small_parts)}}
    server = BastionServer(tmp_path_factory.mktemp("bastion-regions"),
                           env={"BASTION_CLAMD_ADDRESS": clamd.address, "BASTION_REGION_MOVE_GRACE_SECONDS": "0",
                                **regions_env(regions)}).start()
    yield server
    server.stop()
