"""`python -m server`: same as `digits-server`."""

import sys

from server.cli import main

sys.exit(main())
