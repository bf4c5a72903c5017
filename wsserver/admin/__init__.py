"""The admin HTTP API and web console (issue #11); see docs/admin.md.

Served by a child process of the master (:mod:`wsserver.admin.process`); every change is an
edit of the config file (:mod:`.edits`), validated and written atomically (:mod:`.store`) and
applied by the master's hitless reload.
"""
