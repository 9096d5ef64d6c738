"""What gunicorn loads: make psycopg2 cooperative first, then build the app once per worker."""

from psycogreen.gevent import patch_psycopg

patch_psycopg()

import gc  # noqa: E402
import os  # noqa: E402

from session_core.config import Settings  # noqa: E402
from session_core.logs import configure_logging  # noqa: E402
from session_web.app import create_app  # noqa: E402

settings = Settings.from_env(os.environ)
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
# Everything loaded so far lives as long as the worker: keep it out of the collector's full passes,
# which a catch-up read's thousands of records would otherwise trigger over all of it.
gc.freeze()
