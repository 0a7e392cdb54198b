"""The answer to a publish request stays in the Function's status for as long as the request stands."""

from __future__ import annotations

from typing import Any

from kfn import names
from kfn.reconcilers.function import publish_answer


def version(number: int, request: int, unchanged: int | None = None) -> dict[str, Any]:
    annotations = {names.ANN_PUBLISH_REQUEST: str(request)}
    if unchanged is not None:
        annotations[names.ANN_PUBLISH_UNCHANGED] = str(unchanged)
    return {"metadata": {"name": f"shop-v{number}", "annotations": annotations}, "spec": {"version": number}}


def test_a_request_answered_by_the_existing_version_keeps_saying_unchanged() -> None:
    # CI: the pass after the one that answered publish 3 with version 2 said "nothing to publish", and a client
    # polling the condition for the answer missed it (test_publish_versions_and_a_weighted_alias)
    answer = publish_answer([version(1, 1), version(2, 3, unchanged=3)], 3)
    assert answer is not None
    assert (answer.reason, answer.message) == ("Unchanged", "version 2 already matches $LATEST")


def test_a_request_that_made_a_version_keeps_saying_published() -> None:
    answer = publish_answer([version(1, 1), version(2, 2)], 2)
    assert answer is not None
    assert (answer.reason, answer.message) == ("Published", "published version 2")


def test_an_older_unchanged_answer_does_not_stand_for_a_newer_request() -> None:
    # version 2 answered request 3 unchanged; request 4 made version 3
    answer = publish_answer([version(2, 3, unchanged=3), version(3, 4)], 4)
    assert answer is not None and answer.reason == "Published" and answer.message == "published version 3"


def test_no_answer_without_a_request_or_a_version_that_answered_it() -> None:
    assert publish_answer([version(1, 1)], 0) is None
    assert publish_answer([version(1, 1)], 2) is None  # not answered yet: the pass publishes
