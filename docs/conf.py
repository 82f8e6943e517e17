# Licensed under a 3-clause BSD style license - see LICENSE.rst
#
# Sphinx configuration for the cnnfind documentation, built on the
# sphinx-astropy v2 configuration (pydata-sphinx-theme).
#
#   pip install -e ".[docs]"
#   sphinx-build -W -b html docs docs/_build/html      (or: tox -e build_docs)

import datetime
import os
import sys
import tomllib
from pathlib import Path

try:
    from sphinx_astropy.conf.v2 import *  # noqa: F403
except ImportError:
    print('ERROR: the documentation requires the sphinx-astropy package to be '
          'installed: pip install -e ".[docs]"')
    sys.exit(1)

# -- Project information -------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
with open(ROOT / 'pyproject.toml', 'rb') as fh:
    _meta = tomllib.load(fh)['project']

project = _meta['name']
author = 'cnnfind developers'
copyright = f'2026-{datetime.datetime.now(datetime.UTC).year}, {author}'
# the static version in pyproject.toml is the single source of truth
release = _meta['version']
version = '.'.join(release.split('.')[:2])

# Make the package importable for autodoc when building from a source tree
# that was not pip-installed.
sys.path.insert(0, str(ROOT))

# -- General configuration -----------------------------------------------------
needs_sphinx = '7.0'

exclude_patterns.extend(['_build', 'api/_templates'])  # noqa: F405

extensions += [  # noqa: F405
    'matplotlib.sphinxext.plot_directive',
]

rst_epilog += """
.. |CNNStarFinder| replace:: :class:`~cnnfind.CNNStarFinder`
.. |DAOStarFinder| replace:: :class:`~photutils.detection.DAOStarFinder`
"""  # noqa: F405

intersphinx_mapping.update({  # noqa: F405
    'photutils': ('https://photutils.readthedocs.io/en/stable/', None),
    'onnxruntime': ('https://onnxruntime.ai/docs/api/python/', None),
})

# Type descriptions in numpydoc docstrings that are not cross-reference
# targets.
nitpicky = False

# -- Plot directive ------------------------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [('png', 100)]
plot_rcparams = {'figure.figsize': (6, 6), 'savefig.bbox': 'tight'}

# -- Options for HTML output ---------------------------------------------------
html_title = f'{project} v{release}'
htmlhelp_basename = project + 'doc'
html_theme_options.update({  # noqa: F405
    'github_url': 'https://github.com/cnnfind/cnnfind',
    'use_edit_page_button': False,
})
html_context = {'default_mode': 'light', 'to_be_indexed': ['stable', 'latest']}

# -- Options for LaTeX / man output --------------------------------------------
latex_documents = [('index', project + '.tex', project + ' Documentation',
                    author, 'manual')]
man_pages = [('index', project.lower(), project + ' Documentation', [author], 1)]

# -- Linkcheck -------------------------------------------------------------------
linkcheck_retries = 3
linkcheck_timeout = 30
linkcheck_ignore = [
    r'https://github\.com/cnnfind/.*',  # not public yet
    r'https://cnnfind\.readthedocs\.io.*',
]

# Building on a machine without a network connection: do not fail on
# unreachable intersphinx inventories (they only produce warnings then).
if os.environ.get('CNNFIND_DOCS_OFFLINE'):
    intersphinx_mapping.clear()  # noqa: F405
