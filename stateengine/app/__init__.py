"""The applications built on the client and the server (SPEC §2): the ``stateengine``
command line (:mod:`stateengine.app.cli`), the HTTP gateway (:mod:`stateengine.app.gateway`)
and the demo (:mod:`stateengine.app.demo`). Nothing below this layer imports it.
"""
