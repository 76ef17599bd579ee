import sys

from lensearch.cli import main

sys.exit(main())
