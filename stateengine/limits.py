"""Every limit a request, a table or a connection meets, defined once (issue 14).

Why one module: a write the engine acknowledges must be storable by every layer behind
it (the arena, the log, SQLite, PostgreSQL, the JSON store, the change feed, a JSON
reply) and recovered by every restart. When each layer kept its own literals, the engine
took a table name of 70 KB or an id of 2⁶³, the arena (16-bit key length, signed 64-bit
ids) refused it after the acknowledgement and switched itself off, and restarts failed.
So the engine checks these rules at the front door, and the layers behind it import the
same numbers instead of their own.

What the limits are, and which layer sets them:

* **Table names**: non-empty text, at most :data:`MAX_NAME_BYTES` bytes of UTF-8, no NUL
  (PostgreSQL ``text`` cannot hold NUL; the arena reserves names that start with one).
* **Ids**: an int in the signed 64-bit range :data:`ID_MIN`..:data:`ID_MAX` (the arena's
  keys), or text of at most :data:`MAX_ID_BYTES` bytes of UTF-8. A name plus an id stays
  far below PostgreSQL's btree entry limit (:data:`PG_INDEX_ENTRY_BYTES`) and the arena's
  16-bit key length (:data:`ARENA_KEY_BYTES`).
* **Text anywhere** (names, field names, map keys, string values): valid Unicode text,
  so no lone surrogate (``"\\ud800"``, which JSON can spell and no UTF-8 encoder takes).
* **Values**: ints in :data:`INT_MIN`..:data:`INT_MAX` (msgpack's range: a stored value
  may be an unsigned 64-bit int, an id may not).
* **Requests**: one limit, :data:`MAX_REQUEST_BYTES` (``serve --max-request-bytes``
  changes it; ``server.json`` publishes it to clients); ``order_by`` at most
  :data:`MAX_ORDER_KEYS` keys.

Imports nothing of the project but :mod:`stateengine.errors` (a leaf: every layer may
import it).
"""

from __future__ import annotations

from typing import Any, Final

from stateengine.errors import BadRequest

# --- names, ids, text ---------------------------------------------------------------------

__all__ = [
    "ARENA_KEY_BYTES",
    "FD_RESERVE",
    "HANDSHAKE_SECONDS",
    "ID_MAX",
    "ID_MIN",
    "INT_MAX",
    "INT_MIN",
    "MAX_CLAIM_WAIT",
    "MAX_DEPTH",
    "MAX_ID_BYTES",
    "MAX_NAME_BYTES",
    "MAX_ORDER_KEYS",
    "MAX_PARKED_CLAIMS",
    "MAX_RECORD_BYTES",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_TCP_CONNECTIONS",
    "MAX_TCP_HANDSHAKES",
    "OVERSIZE_FACTOR",
    "PG_INDEX_ENTRY_BYTES",
    "REPEAT_LOG_SECONDS",
    "REQ_ID_WINDOW",
    "STORAGE_PROBE_BYTES",
    "STORAGE_RETRY_SECONDS",
    "check_id",
    "check_table_name",
    "check_text",
]


#: Longest table name, in bytes of UTF-8.
MAX_NAME_BYTES: Final = 1024
#: Longest string id, in bytes of UTF-8.
MAX_ID_BYTES: Final = 1024
#: Integer ids: the signed 64-bit range (the arena packs ids as int64).
ID_MIN: Final = -(2**63)
ID_MAX: Final = 2**63 - 1
#: Integer values: msgpack's range (int64 and uint64).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
#: Deepest nesting of lists and maps in a value.
MAX_DEPTH: Final = 32
#: Most keys in one ``order_by`` (each costs a comparison per pair of records).
MAX_ORDER_KEYS: Final = 32
#: Longest ``wait`` of a blocking ``CLAIM_RECORD`` (seconds): a parked claim holds a few
#: hundred bytes in the writer; a client that wants longer waits again.
MAX_CLAIM_WAIT: Final = 3600.0
#: Most claims parked at once; past it a claim with ``wait`` is answered at once (null).
MAX_PARKED_CLAIMS: Final = 100_000

#: What the layers behind the engine can carry; the rules above stay below both.
#: PostgreSQL: largest btree index entry on an 8 KB page (the ``(tbl, rid)`` primary key).
PG_INDEX_ENTRY_BYTES: Final = 2704
#: The arena: a record's key (msgpack of table and id) has a 16-bit length.
ARENA_KEY_BYTES: Final = 0xFFFF
#: Largest record (msgpack, ``_version`` included): what the arena stores by default
#: (``shm.codec``). Requests are bounded too, but patches can grow a record past it.
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024

# --- requests and replies -----------------------------------------------------------------

#: Largest request body the server decodes (``serve --max-request-bytes``); clients
#: refuse larger ones before sending (``server.json`` says the server's value).
MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
#: Largest reply; a larger one is answered ``PayloadTooLarge`` (page with offset/limit).
MAX_REPLY_BYTES: Final = 64 * 1024 * 1024
#: Bodies up to this many times the request limit are read whole and answered
#: ``PayloadTooLarge`` with their ``req_id``; libzmq cuts the connection of a larger one
#: (``ZMQ_MAXMSGSIZE``) before the writer holds it in memory.
OVERSIZE_FACTOR: Final = 4
#: Bytes at the start of an oversize msgpack body where the clients put ``req_id`` (first
#: key of the map), so the server can answer it without decoding the rest.
REQ_ID_WINDOW: Final = 64

# --- the writer's doors and logs (issue 14 items 6, 7 and 18) -----------------------------

#: TCP connections open at once (CurveZMQ clients and handshakes); the next is refused.
MAX_TCP_CONNECTIONS: Final = 256
#: unauthenticated TCP handshakes in progress at once; the next connection is refused.
MAX_TCP_HANDSHAKES: Final = 32
#: seconds a connection gets to finish its ZMTP/CurveZMQ handshake (ZMQ_HANDSHAKE_IVL).
HANDSHAKE_SECONDS: Final = 10.0
#: descriptors kept free for the writer's own files (log segments, snapshot, SQLite,
#: JSON temp file, lock) and libzmq's internals, below the RLIMIT_NOFILE soft limit.
FD_RESERVE: Final = 128
#: at most one log line per this many seconds per kind of repeated event (replies
#: dropped, connections refused, handshakes failed), with the count folded into it.
REPEAT_LOG_SECONDS: Final = 10.0
#: after a pass could not be stored (disk full), seconds between two checks whether the
#: disk takes writes again, and the bytes each check writes (and removes) to find out.
STORAGE_RETRY_SECONDS: Final = 1.0
STORAGE_PROBE_BYTES: Final = 1 << 20


# --- the checks ---------------------------------------------------------------------------


def check_text(text: str, where: str) -> str:
    """Return *text* if it is valid Unicode text (no lone surrogate).

    Why: a lone surrogate (JSON's ``"\\ud800"``) has no UTF-8 form, so msgpack, the log,
    SQLite and PostgreSQL all fail on it after the engine took it. ASCII is checked in
    one C call; only other text pays for an encode.

    :raises BadRequest: naming *where*.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            f"{where}: invalid text: a lone surrogate {text[exc.start]!r} at index {exc.start}"
            " (text must be valid Unicode)"
        ) from None
    return text


def _utf8_len(text: str, where: str) -> int:
    if text.isascii():
        return len(text)
    check_text(text, where)
    return len(text.encode("utf-8"))


def check_table_name(name: Any, where: str = "state") -> str:
    """Return *name* if it can name a table in every layer.

    :raises BadRequest: not a non-empty string, longer than :data:`MAX_NAME_BYTES` bytes
        of UTF-8, holding a NUL or a lone surrogate.
    """
    if type(name) is not str or not name:
        raise BadRequest(f"'{where}' must be a non-empty string, not {name!r:.80}")
    if len(name) <= MAX_NAME_BYTES // 4 and name.isascii() and "\x00" not in name:
        return name  # the common case: short ASCII
    size = _utf8_len(name, where)
    if size > MAX_NAME_BYTES:
        raise BadRequest(
            f"'{where}': a table name is at most {MAX_NAME_BYTES} bytes of UTF-8, "
            f"not {size} ({name!r:.40}...)"
        )
    if "\x00" in name:
        raise BadRequest(f"'{where}': a table name cannot hold NUL ({name!r:.80})")
    return name


def check_id(value: Any, where: str = "id") -> int | str:
    """Return *value* if it can be a record id in every layer.

    :raises BadRequest: not an int or a string, an int outside the signed 64-bit range,
        or a string longer than :data:`MAX_ID_BYTES` bytes of UTF-8 or not valid text.
    """
    t = type(value)
    if t is int:
        if ID_MIN <= value <= ID_MAX:
            return value  # type: ignore[no-any-return]
        raise BadRequest(
            f"{where}: integer id {value} is outside the signed 64-bit range [{ID_MIN}, {ID_MAX}]"
        )
    if t is str:
        if len(value) <= MAX_ID_BYTES // 4 and value.isascii():
            return value  # type: ignore[no-any-return]
        size = _utf8_len(value, where)
        if size > MAX_ID_BYTES:
            raise BadRequest(
                f"{where}: a string id is at most {MAX_ID_BYTES} bytes of UTF-8, "
                f"not {size} ({value!r:.40}...)"
            )
        return value  # type: ignore[no-any-return]
    raise BadRequest(f"{where}: an id is an integer or a string, not a {t.__name__}")
