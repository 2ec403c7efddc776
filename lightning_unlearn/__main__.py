"""``python -m lightning_unlearn`` runs the command line."""

from .cli import entry_point

entry_point()
