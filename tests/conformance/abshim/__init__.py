"""What the converted Autobahn|Testsuite case modules import in place of ``autobahn.websocket.*``.

The converter (``tests/conformance/convert.py``) rewrites ``autobahn.websocket.X`` to
``tests.conformance.abshim.X`` and a few Python 2 modules to :mod:`.compat`.  The protocol
itself (what ``self.p`` is in a case) lives in ``tests/conformance/client.py``.
"""
