"""FleetStream: vehicle data from car makers to the applications that use it, on Apache Beam."""

__version__ = "0.1.0"
