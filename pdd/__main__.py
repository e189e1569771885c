"""`python -m pdd ...` is the `pdd` command: a Ray job runs it this way, with the uploaded project on sys.path."""

import sys

from pdd.cli import main

sys.exit(main())
