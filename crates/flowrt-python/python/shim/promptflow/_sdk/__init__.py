"""promptflow._sdk compatibility: only what flows import from it (`_sdk.entities`' connections)."""
