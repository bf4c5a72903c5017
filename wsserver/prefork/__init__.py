"""The pre-forking process model: a master (``arbiter``) supervising worker processes.

``wsserver serve`` runs :func:`wsserver.prefork.arbiter.serve`. The master binds the ports
(``sockets``), writes its pid file (``pidfile``), forks the workers (``worker``; every forked
child starts through ``child``), restarts them, reloads on SIGHUP and relays broadcasts
between them (``relay``). Beside the workers its loop drives services (``service``): the
metrics listener (``status``) and those its caller adds, such as the admin process's
supervisor (``wsserver.admin.supervisor``); they see the master through a read-only view.
See ``docs/operations.md``.
"""
