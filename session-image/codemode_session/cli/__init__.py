"""The `codemode` command line."""
