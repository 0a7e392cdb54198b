"""Schedule event source mappings end to end: a real poller pod ticks a cron schedule and invokes a real function
through the real gateway with EventBridge's scheduled event; a disabled schedule invokes nothing.

The poller pods run with the seconds test hook (``KFN_SCHEDULE_TEST_SECONDS=1``, see kfn.sources.schedule): a cron
minute lasts a second, so ``cron(0/2 * * * ? *)`` fires every two seconds.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from esmrig import World, wait_until, world  # noqa: F401 - world is the module's fixture

pytestmark = pytest.mark.e2e


def schedule(name: str, expression: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": name},
            "spec": {"functionName": "rec", "source": {"schedule": {"expression": expression}}, **spec}}


def events(w: World) -> list[dict[str, Any]]:
    return [json.loads(x) for x in w.client().lrange("got:schedule", 0, -1)]


def test_a_cron_schedule_fires_on_time_and_a_disabled_one_never(world: World) -> None:
    world.api.apply([schedule("ticks", "cron(0/2 * * * ? *)"),
                     schedule("off", "cron(* * * * ? *)", enabled=False)])
    runs = wait_until(lambda: (e := events(world)) and len(e) >= 5 and e, 300, "five scheduled events arrive")
    got = [r["event"] for r in runs]
    first = got[0]
    assert (first["detail-type"], first["source"], first["version"], first["detail"]) == (
        "Scheduled Event", "aws.events", "0", {})
    assert first["resources"][0].endswith(f":schedule/{world.ns}/ticks")
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() for e in got]
    assert all(t % 2 == 0 for t in times)  # on the schedule's ticks (even seconds)
    assert all(b > a for a, b in zip(times, times[1:])) and len({e["id"] for e in got}) == len(got)  # none twice
    # on time once the function is warm (the first run waited for its cold start; ticks it outlived collapsed)
    assert all(r["t"] - t < 1.5 for r, t in zip(runs[-3:], times[-3:])), [(r["t"], t) for r, t in zip(runs, times)]
    # the disabled schedule would have fired every second meanwhile: it has no poller and sent nothing
    state = ((world.api.get("esm", "off") or {}).get("status") or {}).get("state")
    assert state == "Disabled" and world.poller_pods("off") == []
    assert all(r["event"]["resources"][0].endswith("/ticks") for r in events(world))
    world.api.kubectl("delete", "esm", "ticks", "off", "--wait=false")
