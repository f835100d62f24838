"""The format ids ingest accepts are exactly the readers the parser has."""

from contracts.formats import FORMATS
from services.parser.formats.registry import FORMAT_IDS, make_reader


def test_contract_lists_every_reader() -> None:
    assert set(FORMATS) == set(FORMAT_IDS)


def test_every_listed_format_has_a_reader() -> None:
    for format_id in FORMATS:
        assert make_reader(format_id).format_id == format_id
