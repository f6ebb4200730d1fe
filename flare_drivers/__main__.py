"""``python -m flare_drivers`` runs the ``flare`` command."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
