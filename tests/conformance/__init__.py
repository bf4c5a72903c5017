"""RFC 6455 + permessage-deflate conformance: the Autobahn|Testsuite cases run by a Python 3 client.

See ``docs/conformance.md``.
"""
