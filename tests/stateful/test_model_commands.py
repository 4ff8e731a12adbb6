"""The engine model's command list (model.py, written from the README) against the
command table: a command added to the table and not to the model would never be drawn
by the stateful test, and nothing else would say so."""

from __future__ import annotations

from model import COMMANDS

from stateengine import command_table

#: Entries the model leaves out, and why.
NOT_MODELLED = {
    "STATS": "the server's figures: nothing for a model to predict",
    "SYNC": "a cluster node's wait for its stream: null from one engine, no state",
}


def test_the_model_knows_every_command_of_the_table_with_its_arguments() -> None:
    assert set(COMMANDS) == command_table.names() - set(NOT_MODELLED)
    for name, (required, optional) in COMMANDS.items():
        spec = command_table.COMMANDS[name]
        assert (required, optional) == (frozenset(spec.required), frozenset(spec.optional)), name
