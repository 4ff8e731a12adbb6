"""Linearizability and snapshot-consistency checker for recorded histories.

``check(operations)`` decides whether a concurrent history (see
:mod:`stateengine.testing.history`) can be explained by some order of the operations
that respects real time (an operation that completed before another was invoked comes
first) and the product's sequential command semantics (README "Wire protocol"): the
Wing & Gong search with Lowe's memoization, as in porcupine.

How the search is kept small:

- **Sequential prefix.** Operations at the start of the history that do not overlap
  anything (the setup: ``CREATE_STATE``, ``SET_STATE``, a first batch of records) are
  applied in order to one global model state; the rest is checked from there.
- **Partitions (P-compositionality).** Record commands (``GET_RECORD``, ``SET_RECORD``,
  ``PATCH_RECORD``, ``DELETE_RECORD``, ``INCREMENT``, ``CREATE_RECORD`` with an explicit
  id) touch one record; table commands (``LIST_RECORDS``, ``CLAIM_RECORD``, ``SET_STATE``,
  ``CREATE_RECORD`` with an auto id, ``GET_STATE_INFO``, any ``expected_version``) the whole
  table; ``SNAPSHOT`` and ``BATCH`` touch the union of their parts. Union-find on what
  the operations touch gives independent partitions, each searched alone. A table that
  does not exist after the prefix, or that is created, dropped, replaced or altered
  later, is one partition.
- **Memoization** on (linearized set, model state); the linearized set is kept as the
  index of the first unlinearized operation plus a small window bitset.
- **Reads first.** A read that may come next and that the current state explains is
  linearized at once, without branching: nothing has to precede it and it changes
  nothing, so any explanation from there can be rearranged to take it first.
- **seq order.** Recorded writes are linearized in ``seq`` order, and a write of
  unknown outcome only where the recorded ``seq``s leave a free one (below). So the
  only recorded write that may come next is the partition's lowest not yet linearized:
  the search branches only on writes of unknown outcome, and one large table (a task
  queue's 2·10^4 claims and completions) is judged in linear time.
- **Cheap states.** A table's records are a persistent chunked sequence (a write
  copies one chunk of 64 and the list of chunks, and updates a hash summed over
  positions) with a position index carried from one version to the next, and a claim
  scans from where the last claim with the same ``where`` found its record: a write to
  a table of 10^4 records costs little more than one to a table of 10.

Model choices:

- ``_version`` and ``seq``. ``_version`` is the global ``seq`` of the record's last
  write, which no per-partition model can predict, so a write takes the ``seq`` of its
  reply (or the ``_version`` of the record it returned) and the model then compares
  ``_version`` exactly: that is what catches a stale read (an old value *and* its old
  ``_version``, even when a later write put the same value back). Writes are also
  linearized in ``seq`` order (the writer commits in that order). A write of unknown
  outcome that took effect has a ``seq`` no recorded write has (``seq`` is dense), so it
  is linearized only where the recorded ``seq``s leave a free one, and takes it as its
  ``_version`` (past the last recorded write, or with too many free ones, a placeholder
  that matches any ``_version`` no recorded write has, and ``if_version`` against it
  may pass or fail).
- Initial state: every table starts nonexistent unless the history creates it (use the
  sequential prefix for setup) or ``initial`` declares it as ``{table: {id: record}}``;
  a declared table's version is unknown (``expected_version`` may pass or fail), its
  auto-increment counter is assumed to be past its largest integer id.
- Leases and TTLs: the model needs no clock. A lease ends by a write (README lease
  rule 4, ``SET_RECORD``, ``DELETE_RECORD``) or by the server's expiry commit, which the
  history holds as an :data:`EXPIRY` operation of the process ``server``, recorded from
  the change feed (:func:`~stateengine.testing.history.record_server_commits`; the kit's
  fixtures do it). The model checks that each lease it puts back was held (and whether
  it was due to be dead-lettered), and each record it deletes had a TTL. A record under a
  lease is never claimable. A history whose leases ran out with no expiry recorded
  cannot be explained: record the server's commits.
- Errors that do not depend on the state (``BadRequest``, ``SchemaError``,
  ``ImmutableId``, ...; the schema is not modelled) are taken as "no effect" and not
  checked; ``RecordNotFound``, ``VersionConflict``, ``DuplicateId``, ``StateNotFound``,
  ``StateExists`` and ``CapacityError`` are reads of the state and are checked.
  ``LIST_STATES``, ``GET_SCHEMA`` and ``STATS`` are not checked (counted as unchecked).
  A *write* command without a model (a command added to the command table and not
  here) is never taken as "no effect": :func:`check` refuses the history
  (:class:`UnmodelledCommand`).
- ``SNAPSHOT`` is one operation: all its reads must be explained by one state at one
  point of its interval (a ``BATCH`` likewise applies all its commands at one point).
- Reads of unknown outcome say nothing and are dropped; writes of unknown outcome may
  take effect at any later point or never (porcupine's "return time +inf").

Failure reports: for each failing partition (up to :data:`REPORTED_FAILURES`), the
smallest failing sub-history found by delta debugging (the shortest failing prefix, then
chunks dropped together with the operations that observed their writes, keeping only
removals after which the search still gets stuck at the same operation for the same
kind of reason), as a timeline per process, and what the model allowed instead of each
operation it got stuck at. A partition longer than :data:`SHRINK_FROM_START_MAX` is
shrunk from the state the search reached at its deepest point (shown, with the writes
that produced it). Where some operations were explained by no state the search tried,
the first of them (reads first) is the one reported, from the deepest state it was tried
at: a read of a value never written then names itself, not an operation that a wrong
earlier choice of the search left stranded.

The package's modules, in the order they build on each other: ``model`` (the sequential
model and comparing outcomes), ``partitioning``, ``search``, ``report``, ``shrinking``,
``run`` (:func:`check`) and ``cli`` (``python -m stateengine.testing.checker``). Every
name is importable from here, as before the split.
"""

from __future__ import annotations

from stateengine.testing.checker.cli import (
    main,
)
from stateengine.testing.checker.model import (
    _BOOL as _BOOL,
)
from stateengine.testing.checker.model import (
    _LIST as _LIST,
)
from stateengine.testing.checker.model import (
    _MAP as _MAP,
)
from stateengine.testing.checker.model import (
    CHECKED_ERRORS,
    EXPIRY,
    INF,
    LEASE_SLACK_NS,
    MODELS,
    NO_TABLE,
    RECORD_COMMANDS,
    REPORTED_FAILURES,
    RESHAPING_COMMANDS,
    SHRINK_FROM_START_MAX,
    TABLE_COMMANDS,
    WRITE_COMMANDS,
    Branches,
    Ctx,
    Entry,
    Lease,
    Model,
    Outcome,
    State,
    TableState,
    UnmodelledCommand,
    apply,
    describe_outcome,
    freeze,
    modelled,
    outcome_matches,
    refuse_unmodelled,
    step,
)
from stateengine.testing.checker.model import (
    _alter_state as _alter_state,
)
from stateengine.testing.checker.model import (
    _batch as _batch,
)
from stateengine.testing.checker.model import (
    _claim_record as _claim_record,
)
from stateengine.testing.checker.model import (
    _create_record as _create_record,
)
from stateengine.testing.checker.model import (
    _create_state as _create_state,
)
from stateengine.testing.checker.model import (
    _delete_state as _delete_state,
)
from stateengine.testing.checker.model import (
    _err as _err,
)
from stateengine.testing.checker.model import (
    _freeze_record as _freeze_record,
)
from stateengine.testing.checker.model import (
    _get_record as _get_record,
)
from stateengine.testing.checker.model import (
    _get_state_info as _get_state_info,
)
from stateengine.testing.checker.model import (
    _incremented as _incremented,
)
from stateengine.testing.checker.model import (
    _info_matches as _info_matches,
)
from stateengine.testing.checker.model import (
    _list_records as _list_records,
)
from stateengine.testing.checker.model import (
    _preconditions as _preconditions,
)
from stateengine.testing.checker.model import (
    _record_matches as _record_matches,
)
from stateengine.testing.checker.model import (
    _set_state as _set_state,
)
from stateengine.testing.checker.model import (
    _snapshot as _snapshot,
)
from stateengine.testing.checker.model import (
    _strip_id as _strip_id,
)
from stateengine.testing.checker.model import (
    _table_scope as _table_scope,
)
from stateengine.testing.checker.model import (
    _Tag as _Tag,
)
from stateengine.testing.checker.model import (
    _unmodelled_writes as _unmodelled_writes,
)
from stateengine.testing.checker.model import (
    _write_record as _write_record,
)
from stateengine.testing.checker.model import (
    _writes as _writes,
)
from stateengine.testing.checker.partitioning import (
    Partition,
)
from stateengine.testing.checker.partitioning import (
    _checked as _checked,
)
from stateengine.testing.checker.partitioning import (
    _node as _node,
)
from stateengine.testing.checker.partitioning import (
    _partition as _partition,
)
from stateengine.testing.checker.partitioning import (
    _touches as _touches,
)
from stateengine.testing.checker.partitioning import (
    _UnionFind as _UnionFind,
)
from stateengine.testing.checker.report import (
    CheckResult,
    PartitionFailure,
    format_op,
    format_timeline,
)
from stateengine.testing.checker.report import (
    _format_state as _format_state,
)
from stateengine.testing.checker.report import (
    _short as _short,
)
from stateengine.testing.checker.run import (
    _check as _check,
)
from stateengine.testing.checker.run import (
    _initial_state as _initial_state,
)
from stateengine.testing.checker.run import (
    _with_prefix as _with_prefix,
)
from stateengine.testing.checker.run import (
    check,
)
from stateengine.testing.checker.search import (
    _FREE as _FREE,
)
from stateengine.testing.checker.search import (
    MAX_SEQ_CHOICES,
    SearchResult,
)
from stateengine.testing.checker.search import (
    _ctx as _ctx,
)
from stateengine.testing.checker.search import (
    _Deadline as _Deadline,
)
from stateengine.testing.checker.search import (
    _free_seqs as _free_seqs,
)
from stateengine.testing.checker.search import (
    _prepare as _prepare,
)
from stateengine.testing.checker.search import (
    _Prepared as _Prepared,
)
from stateengine.testing.checker.search import (
    _search as _search,
)
from stateengine.testing.checker.search import (
    _seq_of as _seq_of,
)
from stateengine.testing.checker.shrinking import (
    _dependents as _dependents,
)
from stateengine.testing.checker.shrinking import (
    _shrink as _shrink,
)
from stateengine.testing.checker.shrinking import (
    _signature as _signature,
)

__all__ = [
    "CHECKED_ERRORS",
    "EXPIRY",
    "INF",
    "LEASE_SLACK_NS",
    "MAX_SEQ_CHOICES",
    "MODELS",
    "NO_TABLE",
    "RECORD_COMMANDS",
    "REPORTED_FAILURES",
    "RESHAPING_COMMANDS",
    "SHRINK_FROM_START_MAX",
    "TABLE_COMMANDS",
    "WRITE_COMMANDS",
    "Branches",
    "CheckResult",
    "Ctx",
    "Entry",
    "Lease",
    "Model",
    "Outcome",
    "Partition",
    "PartitionFailure",
    "SearchResult",
    "State",
    "TableState",
    "UnmodelledCommand",
    "apply",
    "check",
    "describe_outcome",
    "format_op",
    "format_timeline",
    "freeze",
    "main",
    "modelled",
    "outcome_matches",
    "refuse_unmodelled",
    "step",
]
