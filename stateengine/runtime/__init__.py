"""What servers and clients share at run time, in one neutral place.

A package at the root, beside ``errors`` and ``protocol``, rather than in ``server/``
or ``client/``: both sides need it (the server writes ``server.json`` and binds the
feed; clients and the gateway read ``server.json`` and subscribe to the feed), and a
home in either would make the other import it. It imports only the root's leaf modules
and ``shm`` (process identity), never ``server``, ``client`` or ``app``.

* :mod:`~stateengine.runtime.discovery`: the data directory, the private run directory,
  ``server.json``, and whether the process it names still runs.
"""
