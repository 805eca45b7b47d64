"""promptflow._core compatibility: the module paths older tools import from."""
