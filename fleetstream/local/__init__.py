"""Real servers on loopback for development and tests, started by the project itself.

Each server is one module here with a `Service` subclass (see service.py),
listed in registry.py; `fleetstream dev up|down|status` drives them.
"""
