"""Function names and ARNs as the Lambda API takes them, and how their account and region map to namespaces.

A ``FunctionName`` is a name (``hello``), ``name:qualifier``, a partial ARN (``123456789012:function:hello``)
or a full ARN (``arn:aws:lambda:us-east-1:123456789012:function:hello[:live]``), URL-encoded or not. Each is
checked against the constraints of botocore's service model (the pattern and length of the operation's
``FunctionName`` shape; the ``Qualifier`` shape) and refused with Lambda's ``ValidationException`` text.

Accounts are namespaces: each namespace has the account id :func:`kfn.names.account_id` (a hash of its name);
an ARN's account picks the namespace with that id, a name without an account reaches the gateway's default
namespace. A region other than the gateway's is another Lambda endpoint: not reachable here.
See docs/lambda-api.md.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kfn import names
from kfn.gateway import errors

if TYPE_CHECKING:
    from kfn.gateway.view import CatalogView

DEFAULT_REGION = names.DEFAULT_REGION

# botocore's service model, lambda 2015-03-31: the shapes FunctionName parameters use.
# NamespacedFunctionName (Invoke, GetFunction, GetFunctionConfiguration, ListVersionsByFunction).
NAMESPACED_FUNCTION_NAME = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?"
    r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
)
NAMESPACED_FUNCTION_NAME_MAX = 256
# FunctionName (ListAliases, GetAlias, GetFunctionConcurrency, GetProvisionedConcurrencyConfig).
FUNCTION_NAME = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?"
    r"(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
FUNCTION_NAME_MAX = 140
# NumericLatestPublishedOrAliasQualifier (Invoke, GetFunction, GetFunctionConfiguration).
INVOKE_QUALIFIER = r"\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+"
# Qualifier (GetProvisionedConcurrencyConfig and other configuration calls).
QUALIFIER = r"(|[a-zA-Z0-9$_-]+)"
QUALIFIER_MIN, QUALIFIER_MAX = 1, 128


@dataclass(frozen=True)
class NameShape:
    """The constraints of one operation's FunctionName and Qualifier parameters (from the service model)."""

    pattern: str
    max_length: int
    qualifier_pattern: str

    def compiled(self) -> tuple[re.Pattern[str], re.Pattern[str]]:
        return _compile(self.pattern), _compile(self.qualifier_pattern)


INVOKE_SHAPE = NameShape(NAMESPACED_FUNCTION_NAME, NAMESPACED_FUNCTION_NAME_MAX, INVOKE_QUALIFIER)
CONFIG_SHAPE = NameShape(FUNCTION_NAME, FUNCTION_NAME_MAX, QUALIFIER)

_compiled: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    # Java's String.matches semantics: the whole value, ASCII classes only (\d is [0-9], not any Unicode digit).
    if pattern not in _compiled:
        _compiled[pattern] = re.compile(pattern, re.ASCII)
    return _compiled[pattern]


@dataclass(frozen=True)
class FunctionRef:
    """What a FunctionName (plus ``?Qualifier=``) names: account and region if given, function, qualifier."""

    account: str | None
    region: str | None
    function: str
    qualifier: str | None


def _unquote(value: str) -> str:
    # Names never contain '%', so decoding an already decoded value changes nothing that could be valid.
    return urllib.parse.unquote(value, errors="strict") if "%" in value else value


def _length_violations(value: str, member: str, lo: int, hi: int) -> list[str]:
    if len(value) < lo:
        return [errors.violation(value, member, errors.min_length_rule(lo))]
    if len(value) > hi:
        return [errors.violation(value, member, errors.max_length_rule(hi))]
    return []


def parse_function_name(function_name: str, qualifier: str | None, *, shape: NameShape = INVOKE_SHAPE) -> FunctionRef:
    """Parse a FunctionName path parameter and the ``Qualifier`` query parameter into a :class:`FunctionRef`.

    ``shape`` picks the operation's constraints (``INVOKE_SHAPE``: NamespacedFunctionName, 1–256;
    ``CONFIG_SHAPE``: FunctionName, 1–140). The qualifier in the name and the query must agree.

    Raises:
        errors.ValidationException: a constraint of the model fails (Lambda's "1 validation error detected:
            Value '...' at 'functionName' failed to satisfy constraint: ..."); all failures in one message.
        errors.InvalidParameterValueException: the two qualifiers differ ("The derived qualifier from the
            function name does not match the specified qualifier.").
    """
    try:
        name = _unquote(function_name)
        query_qualifier = _unquote(qualifier) if qualifier is not None else None
    except UnicodeDecodeError:
        name, query_qualifier = function_name, qualifier  # undecodable escapes fail the pattern below
    name_re, qualifier_re = shape.compiled()
    problems: list[str] = []
    match = name_re.fullmatch(name)
    if match is None:
        problems.append(errors.violation(name, "functionName", errors.pattern_rule(shape.pattern)))
    problems += _length_violations(name, "functionName", 1, shape.max_length)
    if query_qualifier is not None:
        if qualifier_re.fullmatch(query_qualifier) is None:
            problems.append(errors.violation(query_qualifier, "qualifier", errors.pattern_rule(shape.qualifier_pattern)))
        problems += _length_violations(query_qualifier, "qualifier", QUALIFIER_MIN, QUALIFIER_MAX)
    if problems or match is None:
        raise errors.validation(*problems)
    region = match.group(3)[:-1] if match.group(3) else None
    account = match.group(9)[:-1] if match.group(9) else None
    function = match.group(11)
    derived = match.group(13)
    if derived is not None and query_qualifier is not None and derived != query_qualifier:
        raise errors.qualifier_mismatch()
    return FunctionRef(account, region, function, derived if derived is not None else query_qualifier)


function_arn = names.function_arn  # arn:aws:lambda:<region>:<account>:function:<function>[:<qualifier>]


def resolve_namespace(ref: FunctionRef, view: CatalogView, default_namespace: str, *,
                      region: str | None = None) -> str:
    """The namespace a FunctionRef reaches: its account's namespace, or *default_namespace* without an account.

    With *region* (the gateway's), an ARN of another region is refused as Lambda refuses a function of another
    region's endpoint.

    Raises:
        errors.ResourceNotFoundException: no known namespace has the account id (``Function not found: <arn>``),
            or the ARN's region is not the gateway's.
        errors.ServiceException: two namespaces hash to the same account id (astronomically unlikely; refused
            rather than guessed, and named so an administrator can rename one).
    """
    if region is not None and ref.region is not None and ref.region != region:
        raise errors.ResourceNotFoundException(
            f"Functions from '{ref.region}' are not reachable in this region ('{region}')")
    if ref.account is None:
        return default_namespace
    matches = sorted(ns for ns in view.namespaces() if names.account_id(ns) == ref.account)
    if not matches:
        arn = function_arn(ref.region or region or DEFAULT_REGION, ref.account, ref.function, ref.qualifier)
        raise errors.not_found_function(arn)
    if len(matches) > 1:
        raise errors.ServiceException(
            f"Account {ref.account} is ambiguous: namespaces {', '.join(matches)} share it; rename one")
    return matches[0]
