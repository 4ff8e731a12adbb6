"""``python -m stateengine``: the same command line as the ``stateengine`` script."""

import sys

from stateengine.server.cli import main

sys.exit(main())
