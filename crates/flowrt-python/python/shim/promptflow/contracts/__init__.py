"""promptflow.contracts compatibility (types only)."""
