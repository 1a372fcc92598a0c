"""The state-size bounds the caps rely on equal what the state codec would write."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import call, parse
from tether.models.events import InputEvent
from tether.models.state_size import NUM, pending_cost


def _reference(event: InputEvent) -> int:
    return len(orjson.dumps(event.model_dump_json())) + 2 * NUM + 6


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # JSON cannot carry lone surrogates
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(tool=_TEXT, resource=_TEXT, workload=_TEXT)
# a tool name, a resource and a workload id: quotes, backslashes, control and non-ASCII characters
def test_pending_cost_equals_the_escaped_json_of_the_event(
    tool: str, resource: str, workload: str
) -> None:
    record = call("wf-1", "agent", "tok-1", tool=tool)
    record["action"]["resource"] = resource
    record["agent"]["workload_id"] = workload
    event = parse(record)
    assert pending_cost(event) == _reference(event)
