"""The load generator of wsserver's benchmark suite.

``driver.run_load()`` starts several worker processes (``python -m bench.loadgen``), each one event loop
(uvloop) with its share of the connections, pinned with ``taskset``; they start together at a wall-clock
instant the driver gives them, measure the same window, and report counts, a latency histogram and their
own CPU time (utime + stime from ``/proc/self/stat``).

Clients: ``picows`` (the default, measured fastest) and ``websockets`` (on uvloop when installed), for the
data and handshake scenarios; a raw asyncio client for the idle and storm scenarios, which only need
handshakes (with or without a permessage-deflate offer) and one echo per connection.
"""
