"""``python -m stateengine.testing.checker FILE...`` (see :func:`~.cli.main`)."""

import sys

from stateengine.testing.checker.cli import main

sys.exit(main())
