"""The integration-test support modules under one name (``import harness as h``).

The code lives in the modules by concern; this one only re-exports them:

* processes.py: ``Process``, the temp dir, free ports, /proc helpers
  (``children_of``, ``tree_rss``, ``worker_started``), ``check``, ``wait_until``,
  the after-test health checks of backends and gateways, ``cleanup()``;
* certificates.py: ``make_certs()`` (``rampart certs dev``), ``cert_info()``;
* gateway.py: ``gateway_config()``, ``to_yaml()``, ``Backend``, ``Gateway``;
* clients.py: ``curl()``, ``https_connection()``, ``RawTLS``, ``plain_exchange()``,
  ``admin()``, ``metrics()``, ``Load``, ``s_client()``;
* netns.py and ha_lab.py: the network-namespace lab (imported by name where used).

Test files run under pytest (tests/integration/conftest.py: fixtures, skips, the
per-file time budget and the cleanup of every process and temp dir).
"""

from certificates import *  # noqa: F401,F403
from clients import *  # noqa: F401,F403
from gateway import *  # noqa: F401,F403
from processes import *  # noqa: F401,F403
