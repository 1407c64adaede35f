"""The `gcs` artifact store: Google Cloud Storage (or a GCS emulator) through fsspec/gcsfs."""

__all__: list[str] = []
