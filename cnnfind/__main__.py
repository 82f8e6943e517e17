# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``python -m cnnfind`` is the same as the ``cnnfind`` command."""

import sys

from cnnfind.cli import main

if __name__ == '__main__':
    sys.exit(main())
