"""wsserver's version, in a module of its own at the bottom layer: the package's ``__init__``
imports the runtime, and the metrics must not import that to label ``wsserver_build_info``."""

__version__ = "0.1.0"
