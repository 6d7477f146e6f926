"""This deployment's actions. Importing the package registers all of them."""

from . import backfill, demo

__all__ = ["backfill", "demo"]
