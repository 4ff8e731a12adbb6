"""The write commands that build their request map in line (client/commands.py) build
exactly the map ``_request()`` builds from the same arguments: keys, values, key order.

Hypothesis draws every argument as None or a value, so that both the left-out optional
arguments and a required one passed as None (which ``_request`` leaves out too) are
covered. The control: the same comparison for a method made to forget one optional
argument fails.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateengine.client.commands import CommandsMixin, _request


class Recorder(CommandsMixin):
    """Hands back the request map instead of sending it."""

    def _call(self, request: dict[str, Any]) -> Any:
        return request


IN_LINE = {
    "create_record": "CREATE_RECORD",
    "set_record": "SET_RECORD",
    "patch_record": "PATCH_RECORD",
    "delete_record": "DELETE_RECORD",
    "claim_record": "CLAIM_RECORD",
    "increment": "INCREMENT",
}

values = st.none() | st.integers(-5, 5) | st.text(max_size=3) | st.just({"n": 1})


def arguments(method: str) -> list[str]:
    return [p for p in inspect.signature(getattr(CommandsMixin, method)).parameters][1:]


def built(method: Any, command: str, names: list[str], args: list[Any]) -> tuple[Any, Any]:
    """(the method's map, _request's map), both as lists of items: order counts."""
    kwargs = dict(zip(names, args, strict=True))
    got = method(**kwargs)
    return list(got.items()), list(_request(command, **kwargs).items())


@pytest.mark.parametrize("method", sorted(IN_LINE))
@given(data=st.data())
def test_in_line_maps_are_request_maps(method: str, data: st.DataObject) -> None:
    names = arguments(method)
    args = [data.draw(values, label=name) for name in names]
    got, expected = built(getattr(Recorder(), method), IN_LINE[method], names, args)
    assert got == expected


def test_control_a_method_that_forgets_an_argument_fails() -> None:
    def forgetful(state: Any, id: Any, fields: Any, **optional: Any) -> dict[str, Any]:
        request = {"command": "PATCH_RECORD", "state": state, "id": id, "fields": fields}
        for k, v in optional.items():
            if v is not None and k != "ttl":
                request[k] = v
        return request

    names = arguments("patch_record")
    args = ["t", 1, {"n": 1}, None, None, None, None, 5.0]  # ttl set
    got, expected = built(forgetful, "PATCH_RECORD", names, args)
    assert got != expected
    args[-1] = None
    got, expected = built(forgetful, "PATCH_RECORD", names, args)
    assert got == expected  # the comparison itself is not what fails
