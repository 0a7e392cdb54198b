"""Lambda event filtering (``filterCriteria.filters[].pattern``): which records of a batch reach the function.

Pure. The pattern language is Lambda's (AWS, "Control which events Lambda sends to your function", the EventBridge
pattern subset Lambda supports):

=====================  ============================================================  ==================================
comparison             pattern                                                       matches a value v
=====================  ============================================================  ==================================
equals                 ``"state": ["paid", 3, true]``                                v is one of them (numbers by value)
null / empty           ``[null]`` / ``[""]``                                         v is null / the empty string
prefix / suffix        ``[{"prefix": "us-"}]``, ``[{"suffix": ".png"}]``             a string starting / ending with it
ignore case            ``[{"equals-ignore-case": "x"}]``, ``{"prefix":               case-insensitive
                       {"equals-ignore-case": "x"}}``
anything-but           ``[{"anything-but": ["a", 1]}]``, ``"a"``, ``{"prefix": "x"}``  v is present and none of them
numeric                ``[{"numeric": [">", 0, "<=", 5]}]``                          a number in every range given
exists                 ``[{"exists": true}]`` / ``false``                            the key is present / absent
or                     ``{"$or": [{...}, {...}]}``                                   any sub-pattern matches
=====================  ============================================================  ==================================

Keys of one pattern must all match (AND); values of one key's list: any (OR); a record matching ANY of the filters
is sent (OR across filters, at most 5). An event value that is a list matches when any element matches. A key that
is absent matches only ``exists: false``.

What a pattern sees: the record as the event carries it, with its payload (``data`` of stream records, base64;
``body`` of queue messages; ``value`` of Kafka records, base64) decoded and parsed when it is JSON. Lambda: a
pattern that names the payload's properties drops a record whose payload is not a JSON object (it cannot match);
patterns on the metadata still apply. See :func:`view`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

# payload keys of the records Lambda decodes before filtering, and whether they are base64
PAYLOAD_KEYS = {"data": True, "body": False, "value": True}
_MISSING = object()
_NUMERIC_OPS = {"=", "<", "<=", ">", ">="}


class InvalidPattern(ValueError):
    """A filter pattern Lambda would refuse (the message says what is wrong)."""


def parse(patterns: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON of each ``filters[].pattern``, checked; raises :class:`InvalidPattern`."""
    out = []
    for text in patterns:
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InvalidPattern(f"pattern is not JSON: {e}") from e
        _check(doc, "")
        out.append(doc)
    return out


def _check(pattern: Any, path: str) -> None:
    if not isinstance(pattern, dict) or not pattern:
        raise InvalidPattern(f"pattern{path or ''} must be a non-empty JSON object")
    for key, rule in pattern.items():
        where = f"{path}.{key}"
        if key == "$or":
            if not isinstance(rule, list) or len(rule) < 2:
                raise InvalidPattern(f"{where} must be a list of at least 2 patterns")
            for i, sub in enumerate(rule):
                _check(sub, f"{where}[{i}]")
        elif isinstance(rule, dict):
            _check(rule, where)
        elif isinstance(rule, list):
            if not rule:
                raise InvalidPattern(f"{where} must not be an empty list")
            for item in rule:
                if isinstance(item, dict):
                    _check_operator(item, where)
                elif isinstance(item, list):
                    raise InvalidPattern(f"{where}: a value list cannot hold a list")
        else:
            raise InvalidPattern(f"{where} must be a list of values or an object, got {json.dumps(rule)}")


def _check_operator(item: Mapping[str, Any], where: str) -> None:
    if len(item) != 1:
        raise InvalidPattern(f"{where}: one comparison operator per object, got {sorted(item)}")
    (op, arg), = item.items()
    if op in ("prefix", "suffix"):
        if not (isinstance(arg, str) or (isinstance(arg, dict) and set(arg) == {"equals-ignore-case"})):
            raise InvalidPattern(f"{where}: {op} takes a string")
    elif op == "equals-ignore-case":
        if not isinstance(arg, str):
            raise InvalidPattern(f"{where}: equals-ignore-case takes a string")
    elif op == "exists":
        if not isinstance(arg, bool):
            raise InvalidPattern(f"{where}: exists takes true or false")
    elif op == "anything-but":
        if isinstance(arg, dict):
            if len(arg) != 1 or next(iter(arg)) not in ("prefix", "suffix", "equals-ignore-case"):
                raise InvalidPattern(f"{where}: anything-but takes values, prefix, suffix or equals-ignore-case")
        elif isinstance(arg, list):
            if not arg or any(isinstance(x, (dict, list)) for x in arg):
                raise InvalidPattern(f"{where}: anything-but takes a non-empty list of values")
    elif op == "numeric":
        if not isinstance(arg, list) or not arg or len(arg) % 2:
            raise InvalidPattern(f"{where}: numeric takes operator/number pairs")
        for sym, num in zip(arg[::2], arg[1::2]):
            if sym not in _NUMERIC_OPS or not _is_number(num):
                raise InvalidPattern(f"{where}: numeric takes operator/number pairs, got {sym!r} {num!r}")
    else:
        raise InvalidPattern(f"{where}: unknown comparison operator {op!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    """Whether *event* (a JSON-like dict) matches one parsed *pattern*."""
    if not isinstance(event, Mapping):
        return False
    for key, rule in pattern.items():
        if key == "$or":
            if not any(matches(sub, event) for sub in rule):
                return False
            continue
        value = event.get(key, _MISSING)
        if isinstance(rule, dict):
            if value is _MISSING or not matches(rule, value if isinstance(value, Mapping) else {}):
                return False
        elif not _leaf(rule, value):
            return False
    return True


def _leaf(rule: Sequence[Any], value: Any) -> bool:
    if value is _MISSING:
        return any(isinstance(r, dict) and r.get("exists") is False for r in rule)
    values = value if isinstance(value, list) else [value]
    return any(_one(r, v) for r in rule for v in values) or (
        # exists: true holds for a present key whatever (and however many) its values are
        any(isinstance(r, dict) and r.get("exists") is True for r in rule))


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _one(rule: Any, v: Any) -> bool:
    if not isinstance(rule, dict):
        return _equal(rule, v)
    (op, arg), = rule.items()
    if op == "exists":
        return bool(arg)
    if op == "prefix":
        return isinstance(v, str) and _affix(arg, v, str.startswith)
    if op == "suffix":
        return isinstance(v, str) and _affix(arg, v, str.endswith)
    if op == "equals-ignore-case":
        return isinstance(v, str) and v.casefold() == arg.casefold()
    if op == "numeric":
        return _is_number(v) and all(_compare(v, sym, num) for sym, num in zip(arg[::2], arg[1::2]))
    if op == "anything-but":
        if isinstance(arg, dict):
            return isinstance(v, str) and not _one(arg, v)
        banned = arg if isinstance(arg, list) else [arg]
        return not any(_equal(b, v) for b in banned)
    return False


def _affix(arg: Any, v: str, test: Any) -> bool:
    if isinstance(arg, dict):
        return bool(test(v.casefold(), arg["equals-ignore-case"].casefold()))
    return bool(test(v, arg))


def _compare(v: float, sym: str, num: float) -> bool:
    return {"=": v == num, "<": v < num, "<=": v <= num, ">": v > num, ">=": v >= num}[sym]


def view(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a pattern is matched against for one event record: the record with its payload parsed when JSON.

    Returns None for the payload when it is not JSON (kept as such: a pattern on payload properties cannot match).
    """
    out = dict(record)
    for key, b64 in PAYLOAD_KEYS.items():
        raw = out.get(key)
        if not isinstance(raw, str):
            continue
        try:
            text = base64.b64decode(raw, validate=True) if b64 else raw.encode()
            out[key] = json.loads(text)
        except (binascii.Error, ValueError):
            out[key] = None  # not JSON: the payload offers no properties to match
    return out


def keep(patterns: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    """Whether an event record goes to the function: no filters, or it matches any of them."""
    if not patterns:
        return True
    seen = view(record)
    return any(matches(p, seen) for p in patterns)
