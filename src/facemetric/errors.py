"""User-facing errors.

Every problem caused by the user's input (a bad config field, a missing file, labels out of
range, ...) is raised as :class:`FacemetricError` with a one-line message that names *what*
and *where* and says what was expected. The CLI prints that line (no traceback) and exits 2.
"""

from __future__ import annotations


class FacemetricError(ValueError):
    """A one-line, user-facing error: names the file/field and what was expected."""


class ConfigError(FacemetricError):
    """A configuration field is missing, unknown or has a bad value."""


class DataError(FacemetricError):
    """A dataset, file or pair list cannot be used as given."""
