"""Celery settings of this deployment (``celery -A actionrunner ...`` loads this module).

They are derived from ActionRunner's settings (``ACTIONRUNNER_*`` environment variables, see
``actionrunner/settings.py``); override any Celery setting below.
"""

from actionrunner.celery_config import celery_config
from actionrunner.settings import get_settings
from config.schedules import BEAT_SCHEDULE

globals().update(celery_config(get_settings()))

# this deployment's own actions (tasks/), then ACTIONRUNNER_IMPORTS
imports = ["tasks", *(m for m in imports if m != "tasks")]  # noqa: F821  (set just above)

beat_schedule = BEAT_SCHEDULE
