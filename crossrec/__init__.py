"""crossrec: cross-domain recommendation through language.

Importing ``crossrec`` stays light: no Ray, no transformers until a part that needs them is used.
"""

from crossrec.errors import CrossRecError

__version__ = "0.1.0"

__all__ = ["CrossRecError", "__version__"]
