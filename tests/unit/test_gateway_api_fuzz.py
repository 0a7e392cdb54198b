"""Fuzzing the gateway's Lambda API parsers: any input is a Lambda 4xx or a valid answer, never a crash."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gwapi_fixtures as fx
from kfn import names
from kfn.gateway import arn, control, errors

CATALOG = fx.catalog()
NAME_CHARS = string.ascii_letters + string.digits + "-_.:$%/" + "ä١ \x00\n"

names_st = st.one_of(
    st.text(alphabet=NAME_CHARS, max_size=300),
    st.text(max_size=50),
    st.builds(lambda acct, fn, q: f"arn:aws:lambda:us-east-1:{acct}:function:{fn}{q}",
              st.sampled_from([names.account_id(fx.NS), "123456789012", "12345678901a"]),
              st.sampled_from(["hello", "img", "nope", "busy", ""]),
              st.sampled_from(["", ":live", ":1", ":$LATEST", ":9", ":a:b"])),
)
qualifiers_st = st.one_of(st.none(), st.text(alphabet=NAME_CHARS, max_size=140), st.sampled_from(["live", "1", "$LATEST"]))


@settings(max_examples=400, deadline=None)
@given(names_st, qualifiers_st)
def test_parse_function_name_never_crashes(name: str, qualifier: str | None) -> None:
    """Catches an IndexError/UnicodeError/TypeError escaping as a 500 for some name."""
    try:
        ref = arn.parse_function_name(name, qualifier)
    except errors.LambdaError as e:
        assert 400 <= e.status < 500
        assert type(e) in (errors.ValidationException, errors.InvalidParameterValueException)
        return
    assert ref.function and (ref.account is None or (len(ref.account) == 12 and ref.account.isdigit()))
    assert ref.qualifier is None or ref.qualifier


segments_st = st.one_of(st.text(alphabet=NAME_CHARS, min_size=1, max_size=80),
                        st.sampled_from(["hello", "img", "new", "busy", "nope", "hello%3Alive", "hello:live"]))
paths_st = st.one_of(
    st.builds(lambda s, tail: f"/2015-03-31/functions/{s}{tail}", segments_st,
              st.sampled_from(["", "/", "/configuration", "/versions", "/aliases", "/aliases/live", "/aliases/x%20y",
                               "/invocations", "/policy"])),
    st.builds(lambda s, tail: f"/2019-09-30/functions/{s}{tail}", segments_st,
              st.sampled_from(["/concurrency", "/provisioned-concurrency"])),
    st.sampled_from(["/2015-03-31/functions/", "/2015-03-31/functions", "/2016-08-19/account-settings/", "/", ""]),
    st.text(max_size=60),
)
query_keys = st.sampled_from(["Qualifier", "Marker", "MaxItems", "FunctionVersion", "MasterRegion", "Name", "x"])
query_values = st.one_of(st.text(alphabet=NAME_CHARS, max_size=40),
                         st.sampled_from(["ALL", "1", "0", "-1", "10001", "live", "$LATEST", "us-east-1",
                                          control.encode_marker(("hello", 0)), "W10=", "eyJhIjoxfQ=="]))
query_st = st.dictionaries(query_keys, st.lists(query_values, min_size=1, max_size=2), max_size=4)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]), paths_st, query_st)
def test_handle_answers_every_request(method: str, path: str, query: dict[str, list[str]]) -> None:
    """Any method/path/query: a Lambda 4xx error shape, or a 200 whose body is the operation's output shape."""
    status, headers, body = control.handle(method, path, query, CATALOG, fx.SETTINGS)
    doc = json.loads(body)
    assert headers["Content-Type"] == "application/json" and headers["x-amzn-RequestId"]
    if status == 200:
        op = control.operation(method, path)
        assert op is not None
        assert fx.shape_errors(doc, fx.output_shape(op)) == []
    else:
        assert 400 <= status < 500, (status, doc)
        error_type = headers["x-amzn-ErrorType"]
        assert error_type in errors.WIRE
        assert doc["Type"] == "User"
        if error_type in fx.SHAPES:  # modelled: only the shape's members, with its casing
            assert set(doc) <= set(fx.SHAPES[error_type]["members"]), doc
