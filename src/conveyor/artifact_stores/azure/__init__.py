"""The `azure` artifact store: Azure Blob Storage (or Azurite) through fsspec/adlfs."""

__all__: list[str] = []
