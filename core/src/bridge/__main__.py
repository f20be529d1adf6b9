"""``python -m bridge``: the ``bridge`` command line (so ``torchrun -m bridge harvest ...`` works)."""

import sys

from bridge.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
