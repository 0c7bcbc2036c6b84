"""payrelay: a webhook relay for crypto payment processors."""

__version__ = "0.1.0"
