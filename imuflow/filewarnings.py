"""A file's warnings, bounded (SPEC §7): at most 20, each at most 300 characters, then "N more".

Every writer of `imu_data_files.warnings` (ingest's archive notes, the parser's readers
and job) merges through `merge`, so the list on the record, in events and on the page
stays small whatever a hostile or badly damaged file produces. The "N more" entry is the
last one and carries its own count, so merging again (a resumed job, a later batch)
keeps counting from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_WARNINGS = 20
MAX_WARNING_CHARS = 300
_MORE = re.compile(r"^\.\.\. and ([0-9]+) more warnings?$")


def clip(text: str, limit: int = MAX_WARNING_CHARS) -> str:
    """`text` cut to `limit` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _more(n: int) -> str:
    return f"... and {n} more warning{'s' if n != 1 else ''}"


def merge(old: Iterable[str], new: Iterable[str]) -> list[str]:
    """`old` plus the warnings of `new` it lacks, bounded as the module says."""
    merged: list[str] = []
    extra = 0
    for warning in old:
        if m := _MORE.match(warning):
            extra += int(m.group(1))
        else:
            merged.append(clip(warning))
    if len(merged) > MAX_WARNINGS:  # a list written before the bound existed
        extra += len(merged) - MAX_WARNINGS
        merged = merged[:MAX_WARNINGS]
    for warning in new:
        text = clip(warning)
        if text in merged:
            continue
        if len(merged) < MAX_WARNINGS:
            merged.append(text)
        else:
            extra += 1
    return merged + ([_more(extra)] if extra else [])
