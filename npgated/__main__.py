"""``python -m npgated ...``: the same command line as ``npgated ...`` (see :mod:`npgated.cli`)."""

import sys

from npgated.cli import main

if __name__ == "__main__":
    sys.exit(main())
