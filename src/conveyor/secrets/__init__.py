"""Secrets: values encrypted at rest in the metadata store with a key kept outside it, referenced from
component configs and `settings["environment"]` as `{{name.key}}`, and resolved only when a step is launched."""

from conveyor.secrets.references import SecretReferenceError, find_references, has_references

__all__ = ["SecretReferenceError", "find_references", "has_references"]
