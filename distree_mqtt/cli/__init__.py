"""The `distree` command line."""
