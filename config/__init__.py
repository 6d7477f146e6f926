"""This deployment's configuration: schedules (``schedules.py``) and environment files."""
