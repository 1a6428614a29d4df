"""Stage 1, the manifest: a YAML file in, validated item specs out, or every mistake found.

Owns reading YAML safely (``loader``), each field's check (``fields``), catalog expansion
(``catalog``), reference images (``references``, ``shrink``), what the relay accepts
(``provider``) and the JSON Schema made from the same tables (``schema``). Imports nothing
from a later stage.
"""
