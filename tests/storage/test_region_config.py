"""The regions configuration (BASTION_REGIONS / BASTION_REGIONS_FILE): what is accepted, and every
malformed or unknown setting refused with the reason at start-up (never ignored)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.errors import BadRequest
from bastion.storage.regions import (
    DEFAULT_REGION,
    RegionConfigError,
    check_region,
    load_regions,
    region_of_key,
    storage_key_in,
)


def test_unset_is_one_default_region() -> None:
    regions = load_regions({})
    assert list(regions) == [DEFAULT_REGION] and regions[DEFAULT_REGION].s3 is None


def test_json_and_toml_maps(tmp_path: Path) -> None:
    spec = {"eu": {"store": {"type": "s3", "bucket": "b-eu", "endpoint_url": "http://127.0.0.1:9",
                             "sse": "aws:kms", "sse_kms_key_id": "k1", "prefix": "bastion"},
                   "git_root": str(tmp_path / "git"), "staging_dir": str(tmp_path / "stage")},
            "us": {"store": {"type": "local", "path": str(tmp_path / "us")}}}
    regions = load_regions({"BASTION_REGIONS": json.dumps(spec)})
    assert sorted(regions) == ["default", "eu", "us"]
    eu = regions["eu"]
    assert eu.s3 is not None and eu.s3.bucket == "b-eu" and eu.s3.prefix == "bastion/"
    assert eu.s3.encryption_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"}
    assert eu.git_root == tmp_path / "git" and eu.staging_dir == tmp_path / "stage"
    assert regions["us"].local_path == tmp_path / "us" and regions["us"].s3 is None
    toml = tmp_path / "regions.toml"
    toml.write_text('[eu.store]\ntype = "s3"\nbucket = "b-eu"\nregion_name = "eu-west-1"\n')
    from_file = load_regions({"BASTION_REGIONS_FILE": str(toml)})
    assert from_file["eu"].s3 is not None and from_file["eu"].s3.region_name == "eu-west-1"
    as_json = tmp_path / "regions.json"
    as_json.write_text(json.dumps(spec))
    assert sorted(load_regions({"BASTION_REGIONS_FILE": str(as_json)})) == ["default", "eu", "us"]


@pytest.mark.parametrize("spec,message", [
    ({"EU": {}}, "a region name is 2-24 characters"),
    ({"x" * 30: {}}, "a region name is 2-24 characters"),
    ({"eu": {"bucket": "b"}}, "unknown settings ['bucket']"),
    ({"eu": {"store": {"type": "gcs"}}}, "store type must be 'local' or 's3'"),
    ({"eu": {"store": {"type": "s3", "bucket": "b", "acl": "public-read"}}}, "unknown S3 settings ['acl']"),
    ({"eu": {"store": {"type": "s3"}}}, "missing 1 required positional argument"),
    ({"eu": {"store": {"type": "s3", "bucket": "b", "sse": "none"}}}, "sse must be one of"),
    ({"eu": {"store": {"type": "local", "root": "/x"}}}, "unknown local store settings ['root']"),
    ({"eu": "s3://bucket"}, "settings must be an object"),
])
def test_bad_maps_are_refused_with_the_reason(spec: dict[str, object], message: str) -> None:
    with pytest.raises(RegionConfigError) as refused:
        load_regions({"BASTION_REGIONS": json.dumps(spec)})
    assert message in str(refused.value)


def test_unreadable_or_doubly_set_configuration(tmp_path: Path) -> None:
    with pytest.raises(RegionConfigError, match="cannot read"):
        load_regions({"BASTION_REGIONS": "{not json"})
    with pytest.raises(RegionConfigError, match="cannot read"):
        load_regions({"BASTION_REGIONS_FILE": str(tmp_path / "missing.toml")})
    with pytest.raises(RegionConfigError, match="not both"):
        load_regions({"BASTION_REGIONS": "{}", "BASTION_REGIONS_FILE": str(tmp_path / "r.json")})


def test_region_names_in_keys_and_requests() -> None:
    assert region_of_key("ab" * 16) == "default" and region_of_key("eu/" + "ab" * 16) == "eu"
    assert storage_key_in("default", "k") == "k" and storage_key_in("eu", "k") == "eu/k"
    assert check_region(None, ["default", "eu"]) is None and check_region("eu", ["default", "eu"]) == "eu"
    with pytest.raises(BadRequest, match="Unknown storage region 'mars': this instance has the regions: 'default', 'eu'"):
        check_region("mars", ["eu", "default"])
    with pytest.raises(BadRequest, match="must be the name of a storage region"):
        check_region(["eu"], ["eu"])
