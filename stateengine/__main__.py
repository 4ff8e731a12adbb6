"""``python -m stateengine``: the same command line as the ``stateengine`` script."""

import sys

from stateengine.app.cli import main

sys.exit(main())
