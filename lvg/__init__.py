"""lvg: long-form consistent video generation (MemoryPack + Direct Forcing on FramePack-F1)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lvg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"
