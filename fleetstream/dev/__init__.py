"""Real servers on loopback for development and tests, started by the project itself.

Each server is one module here with a `Service` subclass (see service.py),
listed in registry.py; `fleetstream dev up|down|status` drives them. Also the
pytest plugins that hand tests those servers (pytest_plugin.py,
sink_pytest_plugin.py), the MQTT broker's logins and ACLs (mqtt_acl.py) and the
smoke pipelines (smoke.py). Only the CLI's `dev` command (imported when it runs)
and tests import this package; the product never does.
"""
