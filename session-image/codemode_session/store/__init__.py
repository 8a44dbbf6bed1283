"""The store: move workflows, tools and deps between folders, git and storage.

`codemode store ...` (cli/store_cmd.py) is the front end; the pieces are
sources/gitfetch (read), catalog (validate), bootstrap/diff/pull (write, compare,
read back) and target (open storage).
"""
