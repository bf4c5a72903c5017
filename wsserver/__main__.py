import sys

from wsserver.cli import main

sys.exit(main())
