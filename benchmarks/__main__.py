"""`python -m dualbench ...`: the same as the `dualbench` command."""
import sys

from dualbench.cli import main

sys.exit(main())
