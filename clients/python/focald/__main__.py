"""`python -m focald` runs focalctl."""
import sys

from .cli import main

sys.exit(main())
