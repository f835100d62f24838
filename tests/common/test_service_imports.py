"""What a service imports before it starts: the S3 client, Parquet and Sentry only where used.

Every service start pays its imports (three per test stack, and every `imuflow up`):
aiobotocore costs ~0.5 CPU s, pyarrow.parquet ~0.3 s and sentry_sdk ~0.2 s, so a service
on local storage must not import the first, progress not the second before its first
Parquet export, and none the third without a DSN.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
import services.ingest.app, services.progress.app, services.parser.main
print(",".join(m for m in ("aiobotocore", "pyarrow.parquet", "sentry_sdk") if m in sys.modules))
"""


def test_services_import_no_s3_client_parquet_writer_or_sentry() -> None:
    found = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.strip() == "", f"imported at start: {found.stdout.strip()}"


@pytest.mark.parametrize("url", ["s3://bucket/prefix", ""])
def test_is_s3_tells_the_stores_apart(url: str, tmp_path: object) -> None:
    from imuflow import storage
    from imuflow.settings import Settings

    store = storage.open_storage(Settings(storage_url=url, data_dir=tmp_path))
    assert storage.is_s3(store) is bool(url)
    assert (type(store).__name__ == "S3Storage") is bool(url)
