"""`python -m dbackd` runs the same command line as `dbackd`."""
import sys

from dbackd.cli import main

sys.exit(main())
