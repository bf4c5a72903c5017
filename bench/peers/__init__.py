"""Minimal echo servers that wsserver is compared with, one module per peer.

Each module is started by ``bench/run.py`` as ``python -m bench.peers.NAME --port P [--compression]
[--certfile F --keyfile K]`` and echoes every text and binary message on any path.
"""
