"""tdsclip: TDS-CLIP video action recognition by image-to-video transfer learning."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tdsclip")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
