"""The `kubernetes` step operator: a step as a batch/v1 Job. Importing this package imports no kubernetes client."""
