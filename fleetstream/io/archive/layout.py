"""Where the raw archive keeps its files, and which folders a time range needs.

    <root>/raw/<source>/<yyyy>/<mm>/<dd>/<HH>/<source>-<window start>-<window end>-<shard>.<ext>

The hour is the envelopes' receive hour (UTC); the window is the archive
writer's window (`ArchiveRawEnvelopes`), so a file's name is a function of
what it holds and a rewrite replaces it. `archive_patterns` turns a receive
time range into the few globs that cover it (whole days and months coalesced),
so a replay of one hour lists and opens that hour's folder only.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable

#: archive format -> file extension
ARCHIVE_FORMATS = {"jsonl.gz": ".jsonl.gz", "avro": ".avro"}
#: extensions a replay reads from an archive folder
READABLE_EXTENSIONS = (".jsonl.gz", ".jsonl", ".avro")
HOUR_MS = 3_600_000


def _utc(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)


def _stamp(epoch_ms: int) -> str:
    moment = _utc(epoch_ms)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


def hour_folder(root: str, source: str, received_at_ms: int) -> str:
    """`<root>/raw/<source>/<yyyy>/<mm>/<dd>/<HH>` of a receive time."""
    return f"{root.rstrip('/')}/raw/{source}/{_utc(received_at_ms):%Y/%m/%d/%H}"


def archive_file(root: str, source: str, received_at_ms: int, window: tuple[int, int],
                 shard: int, archive_format: str) -> str:
    """The path of one archive file: hour folder, then source, window bounds and shard."""
    start, end = window
    return (f"{hour_folder(root, source, received_at_ms)}/"
            f"{source}-{_stamp(start)}-{_stamp(end)}-{shard:03d}"
            f"{ARCHIVE_FORMATS[archive_format]}")


def archive_patterns(root: str, sources: Iterable[str], from_ms: int | None,
                     until_ms: int | None, now_ms: int) -> list[str]:
    """Globs of the archive folders holding receive times in [from_ms, until_ms).

    Without `from_ms` every folder of a source is listed; without `until_ms`
    the range ends at `now_ms`. Whole days and whole months become one glob.
    """
    base = root.rstrip("/")
    if from_ms is None:
        return [f"{base}/raw/{source}/**" for source in sorted(sources)]
    end = until_ms if until_ms is not None else now_ms + 1
    folders = _covering_folders(from_ms, max(end, from_ms + 1))
    return [f"{base}/raw/{source}/{folder}/**" for source in sorted(sources)
            for folder in folders]


def _covering_folders(from_ms: int, until_ms: int) -> list[str]:
    """`yyyy/mm`, `yyyy/mm/dd` and `yyyy/mm/dd/HH` folders covering [from_ms, until_ms)."""
    hour = _utc(from_ms).replace(minute=0, second=0, microsecond=0)
    end = _utc(until_ms)
    folders: list[str] = []
    while hour < end:
        month_end = (hour.replace(day=28) + timedelta(days=4)).replace(day=1)
        day_end = hour + timedelta(days=1)
        if hour.day == 1 and hour.hour == 0 and month_end <= end:
            folders.append(f"{hour:%Y/%m}")
            hour = month_end
        elif hour.hour == 0 and day_end <= end:
            folders.append(f"{hour:%Y/%m/%d}")
            hour = day_end
        else:
            folders.append(f"{hour:%Y/%m/%d/%H}")
            hour += timedelta(hours=1)
    return folders


def is_archive_file(path: str) -> bool:
    """True for the file kinds a replay reads (JSON lines, gzip or not, and Avro)."""
    return path.endswith(READABLE_EXTENSIONS)
