"""``kfn credentials create``'s pure parts: the key's shape, the Secret the gateway finds it by, the profile the aws
CLI reads."""

from __future__ import annotations

import base64
import configparser
import re

from kfn import names
from kfn.cli import credentials


def test_keys_have_awss_shapes_and_never_repeat() -> None:
    keys = [credentials.new_key() for _ in range(50)]
    for key_id, secret in keys:
        # the gateway only looks up ids of this shape (a label selector is built from it)
        assert re.fullmatch(r"AKKF[A-Z2-7]{16}", key_id) and len(secret) == 40
    assert len({k for k, _ in keys}) == len({s for _, s in keys}) == 50


def test_the_secret_is_found_by_its_key_id_and_dies_with_its_service_account() -> None:
    s = credentials.make_key_secret("team-a", "deployer", "uid-1", "AKKFABCDEFGHIJKLMNOP", "sekrit")
    meta = s["metadata"]
    assert meta["namespace"] == "team-a"
    assert meta["labels"][names.LABEL_ACCESS_KEY_ID] == "AKKFABCDEFGHIJKLMNOP"
    assert meta["labels"][names.LABEL_ACCESS_KEY_SERVICE_ACCOUNT] == "deployer"
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "ServiceAccount", "name": "deployer",
                                        "uid": "uid-1"}]
    assert base64.b64decode(s["data"]["secretAccessKey"]) == b"sekrit"


def test_the_profile_is_an_aws_config_section() -> None:
    text = credentials.profile_text("kfn-team-a-deployer", "AKKFX", "s/e+c", "us-east-1", "http://gw:8080")
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert dict(parser["profile kfn-team-a-deployer"]) == {
        "aws_access_key_id": "AKKFX", "aws_secret_access_key": "s/e+c", "region": "us-east-1",
        "endpoint_url": "http://gw:8080"}


def test_the_printed_profile_names_the_keys_secret_and_still_parses() -> None:
    # Catches: users guessing the Secret a poller's kfn.dev/invoke-credentials-secret annotation must name (the id
    # is printed upper case, the Secret's name is lower case) or a profile that no longer appends to ~/.aws/config.
    key = credentials.make_key_secret("team-a", "feeder", "uid-1", "AKKFABCDEFGHIJKLMNOP", "sekrit")
    assert key["metadata"]["name"] == credentials.secret_name("AKKFABCDEFGHIJKLMNOP") == "kfn-access-key-akkfabcdefghijklmnop"
    text = credentials.profile_text("p", "AKKFABCDEFGHIJKLMNOP", "sekrit", "us-east-1", None,
                                    "team-a/kfn-access-key-akkfabcdefghijklmnop")
    assert text.splitlines()[0] == "# key held in Secret team-a/kfn-access-key-akkfabcdefghijklmnop"
    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser["profile p"]["aws_access_key_id"] == "AKKFABCDEFGHIJKLMNOP"
