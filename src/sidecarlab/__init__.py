"""sidecarlab: the Sidecar Lab workshop kit."""

__version__ = "0.1.0"
