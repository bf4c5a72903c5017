"""Names from Twisted / zope.interface that case modules outside the run list import at module level.

``case9_9_1`` (commented out of Autobahn's own ``Cases`` list) declares a Twisted push producer;
importing the case package imports it, so its module-level names must exist.  Nothing here runs.
"""

from __future__ import annotations

from types import SimpleNamespace


def implements(*_interfaces: object) -> None:
    return None


interfaces = SimpleNamespace(IPushProducer=object, IPullProducer=object, IConsumer=object)
reactor = None
