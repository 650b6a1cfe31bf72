import sys

from chtn.cli import main

sys.exit(main())
