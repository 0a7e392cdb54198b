"""Child names and labels: readable when short, unique and within 63 characters when long."""

import re

import pytest

from kfn import names

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("hello", "latest"), "hello-latest"),
        (("hello", "v3"), "hello-v3"),
        (("My.Func_1", "code"), "my-func-1-code"),
        (("9lives", "latest"), "fn-9lives-latest"),
    ],
)
def test_short_names_stay_readable(parts, expected):
    assert names.child_name(*parts) == expected


def test_long_names_are_truncated_hashed_and_distinct():
    a = names.child_name("f" * 63, "latest")
    b = names.child_name("f" * 63, "v1")
    assert len(a) == len(b) == 63
    assert a != b
    assert DNS_1035.match(a) and DNS_1035.match(b)
    assert names.child_name("f" * 63, "latest") == a  # stable


def test_empty_part_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        names.child_name("hello", "")


@pytest.mark.parametrize(("version", "label", "lam"), [("$LATEST", "latest", "$LATEST"), (3, "3", "3"), ("latest", "latest", "$LATEST")])
def test_version_spellings(version, label, lam):
    assert names.version_label(version) == label
    assert names.lambda_version(version) == lam


def test_function_labels_carry_function_version_and_manager():
    labels = names.function_labels("hello", "$LATEST")
    assert labels == {
        "kfn.dev/function": "hello",
        "kfn.dev/version": "latest",
        "kfn.dev/component": "function",
        "app.kubernetes.io/managed-by": "kfn",
    }
    assert names.selector_labels("hello", 2) == {"kfn.dev/function": "hello", "kfn.dev/version": "2"}


def test_object_names_agree():
    assert names.version_object_name("hello", 2) == "hello-v2"
    assert names.environment_name("hello", 2) == "hello-v2"
    assert names.environment_name("hello", "$LATEST") == "hello-latest"
    assert names.code_name("hello", "$LATEST") == "hello-latest-code"
    assert names.network_policy_name("hello", 1, "egress") == "hello-v1-egress"
