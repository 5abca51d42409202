"""``python -m benchmarks [--quick] [--only NAME ...]``: run the suite, write SUMMARY.md."""

import sys

from benchmarks.runner import main

sys.exit(main())
