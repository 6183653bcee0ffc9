"""Where ``celery -A sslm_tasks`` finds the app: Celery looks for ``<package>.celery``.

The package's ``__init__`` must not import Celery (importing ``sslm_tasks`` starts nothing),
so the app is re-exported from this conventional module instead.
"""

from sslm_tasks.app import app

__all__ = ["app"]
