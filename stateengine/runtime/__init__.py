"""What servers and clients share at run time, in one neutral place.

A package at the root, beside ``errors`` and ``protocol``, rather than in ``server/``
or ``client/``: both sides need it (the server writes ``server.json`` and publishes the
feed; clients and the gateway read ``server.json`` and subscribe to the feed), and a
home in either would make the other import it. It imports only the root's leaf modules
and ``shm`` (process identity), never ``server``, ``client`` or ``app``, and no ZeroMQ at
import time.

* :mod:`~stateengine.runtime.discovery`: the data directory (:func:`resolve_data_dir`),
  the private run directory, ``server.json``, and whether the process it names still
  runs (:func:`pid_alive`, re-exported from ``shm``'s process identity); private
  directories and files (``private_dir``, ``write_private_file``) and what ``cleanup``
  may remove of a dead server (``remove_leftovers``).
* :mod:`~stateengine.runtime.feed`: the change feed's endpoint and message codec.
* :mod:`~stateengine.runtime.curve`: a CurveZMQ client's socket options.
"""

from stateengine.runtime.curve import client_options
from stateengine.runtime.discovery import (
    SERVER_FILE,
    default_data_dir,
    pid_alive,
    process_start_time,
    read_server_file,
    resolve_data_dir,
    write_server_file,
)
from stateengine.runtime.feed import (
    FEED_HWM,
    decode_change,
    encode_change,
    feed_endpoint,
    feed_gap,
    feed_topic,
)

__all__ = [
    "FEED_HWM",
    "SERVER_FILE",
    "client_options",
    "decode_change",
    "default_data_dir",
    "encode_change",
    "feed_endpoint",
    "feed_gap",
    "feed_topic",
    "pid_alive",
    "process_start_time",
    "read_server_file",
    "resolve_data_dir",
    "write_server_file",
]
