"""Celery settings of this deployment (``celery -A actionrunner ...`` loads this module).

They are derived from ActionRunner's settings (``ACTIONRUNNER_*`` environment variables, see
``actionrunner/settings.py``); override any Celery setting below.
"""

from actionrunner.celery_config import celery_config
from actionrunner.settings import get_settings
from config.schedules import BEAT_SCHEDULE

globals().update(celery_config(get_settings()))

beat_schedule = BEAT_SCHEDULE
