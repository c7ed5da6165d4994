"""Data preparation (the ``[data]`` extra): raw recordings → training shards, and synthetic corpora.

Never imported by inference. Submodules are imported on use; this file stays free of imports.
"""
