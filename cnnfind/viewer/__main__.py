# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``python -m cnnfind.viewer IMAGE.fits [options]``."""

import sys

from cnnfind.viewer._cli import main

if __name__ == '__main__':
    sys.exit(main())
