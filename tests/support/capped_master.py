"""``python -m tests.support.capped_master serve ...``: ``wsserver`` with the worker cap at 2.

A test reaches the cap on SIGTTIN this way without forking the real cap's 256 workers.
"""

from __future__ import annotations

import sys

from wsserver.cli import main
from wsserver.prefork import arbiter

arbiter.MAX_WORKERS = 2

if __name__ == "__main__":
    sys.exit(main())
