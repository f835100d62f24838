"""A file's warnings stay bounded: 20 entries of at most 300 characters, then "N more"."""

from __future__ import annotations

from imuflow.filewarnings import MAX_WARNING_CHARS, MAX_WARNINGS, clip, merge


def test_new_warnings_are_added_once_and_clipped() -> None:
    merged = merge(["a"], ["a", "b", "x" * 1000])
    assert merged[:2] == ["a", "b"]
    assert len(merged[2]) == MAX_WARNING_CHARS and merged[2].endswith("…")
    assert merge(merged, ["x" * 1000]) == merged  # the same long warning again is a duplicate
    assert clip("short") == "short"


def test_past_twenty_one_entry_counts_the_rest_across_merges() -> None:
    merged = merge([], [f"w{i}" for i in range(25)])
    assert len(merged) == MAX_WARNINGS + 1
    assert merged[-1] == "... and 5 more warnings"
    merged = merge(merged, ["w3", "new one", "another"])  # a later batch
    assert merged[:MAX_WARNINGS] == [f"w{i}" for i in range(20)]
    assert merged[-1] == "... and 7 more warnings"
    assert merge(merge([], [f"w{i}" for i in range(21)]), [])[-1] == "... and 1 more warning"


def test_an_old_unbounded_list_is_bounded_on_its_next_merge() -> None:
    merged = merge([f"old{i}" for i in range(30)], [])
    assert len(merged) == MAX_WARNINGS + 1 and merged[-1] == "... and 10 more warnings"
