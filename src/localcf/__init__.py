"""localcf: an embedded Cloud Foundry for learning and testing sidecar buildpacks."""

__version__ = "0.1.0"
