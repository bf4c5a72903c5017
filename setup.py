"""Builds the optional C accelerator of the protocol layer (wsserver/protocol/_speedups.c).

Everything else is in setup.cfg. The extension is optional: where no C compiler is present the
install still succeeds and the pure-Python masking in wsserver/protocol/masking.py is used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wsserver.protocol._speedups",
            sources=["wsserver/protocol/_speedups.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
