"""This deployment's actions. Importing the package registers all of them."""

from . import backfill, demo, migrate

__all__ = ["backfill", "demo", "migrate"]
