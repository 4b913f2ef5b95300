"""Worker processes of a service that shares its port (`fleetstream ingest --workers`,
`fleetstream api --workers`): stopping them."""
from __future__ import annotations

from multiprocessing.process import BaseProcess


def stop_processes(workers: list[BaseProcess], timeout_s: float = 15.0) -> None:
    """SIGTERM each worker, wait for it to finish what it accepted, then kill stragglers."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(timeout_s)
        if worker.is_alive():
            worker.kill()
            worker.join()
