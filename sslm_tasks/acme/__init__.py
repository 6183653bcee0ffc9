"""ACME, the protocol of Let's Encrypt and Pebble: a thin layer over certbot's ``acme`` library.

One module per noun, from the wire up:

* ``network``: the library's ``ClientNetwork`` plus Retry-After, and the one mapping of ACME
  failures into our transient/permanent error tree.
* ``directory``: which server a ``ca-info.conf`` entry means, how its HTTPS is trusted, the
  client that talks to it.
* ``accounts``: one account per service, in certbot's on-disk layout under ``cb/``,
  registered with the CA's External Account Binding when it requires one.
* ``orders``: the order as single, repeatable requests around a persisted ``OrderState``.
* ``renewal_info``: ARI (RFC 9773) renewal windows and the backoff after failed orders.

This package is ``sslm_tasks.acme``; the library is the top-level ``acme``. Every import here is
absolute (``import acme.client``), so inside this package ``acme`` always means certbot's
library, never this package. No module here imports Celery, and none ever sleeps: waiting is
the task layer's job.
"""
