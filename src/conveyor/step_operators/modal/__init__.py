"""The `modal` step operator: one Modal Sandbox per step attempt."""
