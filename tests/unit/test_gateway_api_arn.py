"""FunctionName parsing and the account/region -> namespace mapping of the gateway's Lambda API."""

from __future__ import annotations

import gzip
import json
import pathlib

import botocore
import pytest

from kfn import names
from kfn.gateway import arn, errors
from kfn.gateway.view import StaticCatalog

ACCOUNT = "123456789012"
SHAPES = json.loads(gzip.decompress(
    (pathlib.Path(botocore.__file__).parent / "data/lambda/2015-03-31/service-2.json.gz").read_bytes()))["shapes"]


def test_patterns_are_the_models() -> None:
    """Catches drift from botocore: the patterns and limits kfn validates with (and quotes) are the model's."""
    assert SHAPES["NamespacedFunctionName"]["pattern"] == arn.NAMESPACED_FUNCTION_NAME
    assert SHAPES["NamespacedFunctionName"]["max"] == arn.NAMESPACED_FUNCTION_NAME_MAX
    assert SHAPES["FunctionName"]["pattern"] == arn.FUNCTION_NAME
    assert SHAPES["FunctionName"]["max"] == arn.FUNCTION_NAME_MAX
    assert SHAPES["NumericLatestPublishedOrAliasQualifier"]["pattern"] == arn.INVOKE_QUALIFIER
    assert SHAPES["Qualifier"]["pattern"] == arn.QUALIFIER
    assert (SHAPES["Qualifier"]["min"], SHAPES["Qualifier"]["max"]) == (arn.QUALIFIER_MIN, arn.QUALIFIER_MAX)


@pytest.mark.parametrize("name, qualifier, expected", [
    ("hello", None, arn.FunctionRef(None, None, "hello", None)),
    ("hello", "live", arn.FunctionRef(None, None, "hello", "live")),
    ("hello:live", None, arn.FunctionRef(None, None, "hello", "live")),
    ("hello:live", "live", arn.FunctionRef(None, None, "hello", "live")),
    ("hello:$LATEST", None, arn.FunctionRef(None, None, "hello", "$LATEST")),
    ("hello:3", None, arn.FunctionRef(None, None, "hello", "3")),
    ("hello", "$LATEST", arn.FunctionRef(None, None, "hello", "$LATEST")),
    (f"{ACCOUNT}:function:hello", None, arn.FunctionRef(ACCOUNT, None, "hello", None)),
    (f"{ACCOUNT}:function:hello:7", None, arn.FunctionRef(ACCOUNT, None, "hello", "7")),
    (f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:hello", None, arn.FunctionRef(ACCOUNT, "us-east-1", "hello", None)),
    (f"arn:aws:lambda:eu-west-3:{ACCOUNT}:function:hello:live", "live",
     arn.FunctionRef(ACCOUNT, "eu-west-3", "hello", "live")),
    (f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:function:h_1", None, arn.FunctionRef(ACCOUNT, "cn-north-1", "h_1", None)),
    (f"arn%3Aaws%3Alambda%3Aus-east-1%3A{ACCOUNT}%3Afunction%3Ahello%3Alive", None,
     arn.FunctionRef(ACCOUNT, "us-east-1", "hello", "live")),
    ("hello%3A%24LATEST", None, arn.FunctionRef(None, None, "hello", "$LATEST")),
    ("hello", "%24LATEST", arn.FunctionRef(None, None, "hello", "$LATEST")),
])
def test_every_name_form(name: str, qualifier: str | None, expected: arn.FunctionRef) -> None:
    """Catches a form boto3 or the aws CLI sends that the gateway would misread (wrong function/qualifier/account)."""
    assert arn.parse_function_name(name, qualifier) == expected


def test_qualifiers_must_agree() -> None:
    with pytest.raises(errors.InvalidParameterValueException) as e:
        arn.parse_function_name("hello:live", "3")
    assert e.value.message == "The derived qualifier from the function name does not match the specified qualifier."


def test_bad_name_gets_lambdas_validation_text() -> None:
    with pytest.raises(errors.ValidationException) as e:
        arn.parse_function_name("hello world", None)
    assert e.value.message == (
        "1 validation error detected: Value 'hello world' at 'functionName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: " + arn.NAMESPACED_FUNCTION_NAME)
    assert e.value.status == 400


def test_long_name_fails_length_and_pattern_together() -> None:
    with pytest.raises(errors.ValidationException) as e:
        arn.parse_function_name("x" * 141 + "!", None, shape=arn.CONFIG_SHAPE)
    assert e.value.message.startswith("2 validation errors detected: ")
    assert e.value.message.endswith("failed to satisfy constraint: Member must have length less than or equal to 140")


def test_name_and_qualifier_errors_in_one_answer() -> None:
    with pytest.raises(errors.ValidationException) as e:
        arn.parse_function_name("a b", "x y")
    assert "at 'functionName'" in e.value.message and "Value 'x y' at 'qualifier'" in e.value.message


@pytest.mark.parametrize("qualifier", ["", "q" * 129, "a.b", "ä"])
def test_bad_qualifier(qualifier: str) -> None:
    with pytest.raises(errors.ValidationException) as e:
        arn.parse_function_name("hello", qualifier)
    assert "at 'qualifier'" in e.value.message


def test_unicode_digits_are_not_account_ids() -> None:
    """Java's \\d is ASCII; Python's would take Arabic-Indic digits as an account."""
    with pytest.raises(errors.ValidationException):
        arn.parse_function_name("١٢٣٤٥٦٧٨٩٠١٢:function:hello", None)


def test_function_arn() -> None:
    assert arn.function_arn("us-east-1", ACCOUNT, "f") == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f"
    assert arn.function_arn("us-east-1", ACCOUNT, "f", "live") == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f:live"


def test_account_ids_are_stable_twelve_digits() -> None:
    """A changed hash would break every ARN people saved: pin two values."""
    assert names.account_id("default") == names.account_id("default")
    assert len(names.account_id("default")) == 12 and names.account_id("default").isdigit()
    assert names.account_id("default") != names.account_id("team-a")
    assert names.account_id("default") == "%012d" % (int.from_bytes(
        __import__("hashlib").sha256(b"default").digest(), "big") % 10**12)


def _view(*namespaces: str) -> StaticCatalog:
    return StaticCatalog(extra_namespaces=set(namespaces))


def test_account_picks_its_namespace() -> None:
    view = _view("team-a", "team-b")
    ref = arn.parse_function_name(f"{names.account_id('team-b')}:function:hello", None)
    assert arn.resolve_namespace(ref, view, "default") == "team-b"


def test_no_account_reaches_the_default_namespace() -> None:
    assert arn.resolve_namespace(arn.parse_function_name("hello", None), _view("team-a"), "team-a") == "team-a"


def test_unknown_account_is_function_not_found() -> None:
    ref = arn.parse_function_name(f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:hello:live", None)
    with pytest.raises(errors.ResourceNotFoundException) as e:
        arn.resolve_namespace(ref, _view("team-a"), "default", region="us-east-1")
    assert e.value.message == f"Function not found: arn:aws:lambda:us-east-1:{ACCOUNT}:function:hello:live"


def test_other_region_is_not_reachable() -> None:
    ref = arn.parse_function_name(f"arn:aws:lambda:eu-west-1:{names.account_id('a')}:function:hello", None)
    with pytest.raises(errors.ResourceNotFoundException) as e:
        arn.resolve_namespace(ref, _view("a"), "a", region="us-east-1")
    assert e.value.message == "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"


def test_colliding_accounts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two namespaces with one account id: refuse, never pick one silently."""
    monkeypatch.setattr(names, "account_id", lambda ns: "111111111111")
    ref = arn.FunctionRef("111111111111", None, "hello", None)
    with pytest.raises(errors.ServiceException) as e:
        arn.resolve_namespace(ref, _view("a", "b"), "default")
    assert "a, b" in e.value.message
