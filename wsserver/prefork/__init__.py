"""The pre-forking process model: a master (``arbiter``) supervising worker processes.

``wsserver serve`` runs :func:`wsserver.prefork.arbiter.serve`. The master binds the ports,
forks the workers (``worker``), restarts them, reloads on SIGHUP and relays broadcasts
between them (``relay``). See ``docs/operations.md``.
"""
