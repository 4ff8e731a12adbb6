"""The msgpack codec: the one place in ``stateengine.shm`` that calls msgpack (but for
the reader's fast path, which inlines the default ``decode``).

Records are stored as msgpack bytes produced by the writer's codec; readers decode
them with :meth:`MsgpackCodec.decode`. The arena's own structures (ring entries,
checkpoints, block keys) go through :func:`pack_internal` / :func:`unpack_internal`,
so the layout and allocation code never touches msgpack directly.

Size limits: :class:`MsgpackCodec` refuses to encode a record larger than
``max_record_size`` (``PayloadTooLarge``); decoding takes a bytes object that the
arena has already bounded by the block length, and msgpack derives its own
``max_*_len`` limits from the buffer length, so a hostile length field cannot make
it allocate more than the block holds. Safe to share across threads; holds no
process state, so it is safe after fork and picklable for spawn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

import msgpack
import msgspec

from stateengine.errors import PayloadTooLarge
from stateengine.limits import MAX_RECORD_BYTES

__all__ = [
    "DEFAULT_MAX_RECORD_SIZE",
    "ENCODED_TYPES",
    "MsgpackCodec",
    "internal_packer",
    "key_prefix",
    "pack_internal",
    "record_encoder",
    "unpack_internal",
]


DEFAULT_MAX_RECORD_SIZE: Final = MAX_RECORD_BYTES

#: The types of an encoded record ``ArenaWriter.load`` takes as it is: ``bytes``, and
#: ``msgspec.Raw``, a view of a store's own bytes that recovery hands over uncopied
#: (both have ``len`` and the buffer protocol, all the writer uses of them).
ENCODED_TYPES: Final = frozenset({bytes, msgspec.Raw})


class MsgpackCodec:
    """Encode and decode records (msgpack maps, lists, scalars).

    ``decode`` is ``msgpack.unpackb`` with ``strict_map_key=False``; a reader with the
    default codec makes that call inline (``ArenaReader.get``: a partial with keywords
    costs ~0.2 µs a call, merging them into a new dict). It raises ``ValueError`` subclasses
    (``msgpack.ExtraData``, ``FormatError``, ``StackError``) or ``UnicodeDecodeError``
    on bad bytes, which the arena never hands it (bytes are validated first).
    """

    def __init__(self, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        if max_record_size <= 0:
            raise ValueError("max_record_size must be positive")
        self.max_record_size = max_record_size
        # Records may hold maps with integer keys (the wire allows str and int keys).
        self.decode: Any = functools.partial(msgpack.unpackb, strict_map_key=False)

    def encode(self, obj: Any) -> bytes:
        """msgpack-encode ``obj`` (bin type for bytes); ``PayloadTooLarge`` past the limit."""
        data: bytes = msgpack.packb(obj, use_bin_type=True)
        if len(data) > self.max_record_size:
            raise PayloadTooLarge(
                f"record of {len(data)} bytes exceeds max_record_size={self.max_record_size}"
            )
        return data

    def __repr__(self) -> str:
        return f"MsgpackCodec(max_record_size={self.max_record_size})"


def pack_internal(obj: Any) -> bytes:
    """Encode one of the arena's own structures (ring ops, checkpoint, block key).

    msgspec's encoder: the same bytes as ``msgpack.packb(obj, use_bin_type=True)``
    (tests/unit/test_codec_compat.py); a checkpoint of 10⁶ entries packs in 0.07 s
    where msgpack took 0.21 (a start writes one).
    """
    data: bytes = msgspec.msgpack.encode(obj)
    return data


def internal_packer() -> Callable[[Any], bytes]:
    """A reusable ``pack`` for the writer's hot path: the same bytes as
    :func:`pack_internal`, without building a ``Packer`` per call. Not thread-safe
    (the writer is single-threaded)."""
    pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
    return pack


def record_encoder() -> Callable[[Any], bytes]:
    """The writer's encoder of records and table metadata already validated
    (``protocol.check_value``, or built by the engine): msgspec's, the same bytes as
    ``msgpack.packb(obj, use_bin_type=True)`` for every msgpack value
    (tests/unit/test_codec_compat.py), 0.3 µs for the bench's 7-field record where a
    reused ``msgpack.Packer`` takes 0.8 (issue 17; a bulk load packs every record).

    Validated values only: it encodes a set as an array and a dataclass, datetime, ...
    as msgspec does, where msgpack raises ``TypeError`` (what the clients' ``pack_request``
    relies on to name the field; they keep msgpack). Ints past 64 bits raise
    ``OverflowError``, other types ``TypeError``, as msgpack does.
    """
    encode: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode
    return encode


def key_prefix(table: str) -> bytes:
    """The bytes a block key ``pack_internal([table, rid])`` starts with: the 2-element
    array header and the table. ``key_prefix(t) + internal_packer()(rid)`` equals
    ``pack_internal([t, rid])``, so the writer packs each table name once per commit."""
    return b"\x92" + pack_internal(table)


def unpack_internal(data: bytes) -> Any:
    """Decode an arena structure; call only on bytes already validated by CRC."""
    return msgpack.unpackb(data, strict_map_key=False, use_list=True)
