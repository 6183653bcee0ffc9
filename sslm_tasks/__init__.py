"""sslm: certificates from a private CA and ACME, DANE rollover and deployment.

Importing the package starts nothing: the Celery app lives in ``sslm_tasks.app`` and is only
built when a worker, beat or the CLI asks for it.
"""

__version__ = "0.1.0"
