"""`fleetstream api`: the REST API over the latest state (DATA-CONTRACTS §10, docs/state.md).

It stands beside the pipeline: it reads the state the jobs write to Redis, follows the
`activations` topic to know which vehicles each application may see now, and answers each
application with its own API keys. Only the command line imports it.
"""
