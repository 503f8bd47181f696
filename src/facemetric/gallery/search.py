"""Moved to :mod:`facemetric.index.search` (the low-level vector search every application
shares). This module only re-exports it for old imports; import from :mod:`facemetric.index`."""

from facemetric.index.search import *  # noqa: F403
from facemetric.index.search import __all__  # noqa: F401
