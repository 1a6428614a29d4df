"""Stage 1, the manifest: a YAML file in, validated item specs out, or every mistake found.

    validate    the way in: ``load`` a manifest, or ``load_header`` its header alone
    spec        the public types: Manifest, ItemSpec, the signatures of the files read
    loader      reading YAML safely
    read        the data taken apart: the header checked, the raw items handed on
    catalog     generate blocks expanded into raw items
    defaults    what an item takes from defaults:, and from the service's defaults
    check       the checks of each field, each item, and the items together
    chains      items made from other items' images (@ID): the graph checked, each chain's root
    fields      each item field's own check, and the table of item fields
    problems    the errors and warnings found, collected in order
    references  reference images, checked at load and read when sent (``shrink``: made smaller)
    sizes       the shape a request asks for, the pixels it is answered with, the size check
    schema      the JSON Schema, made from the same tables

Imports nothing from a later stage. The way in is exported here: ``from batchgen import
manifest``, then ``manifest.load(path)``, ``manifest.Manifest``, ``manifest.ItemSpec``.
"""

from batchgen.manifest.fields import ID_HELP, ITEM_KEYS, check_id
from batchgen.manifest.spec import ItemSpec, Manifest, Signature, output_stems, signature
from batchgen.manifest.validate import load, load_header

__all__ = [
    "ID_HELP",
    "ITEM_KEYS",
    "ItemSpec",
    "Manifest",
    "Signature",
    "check_id",
    "load",
    "load_header",
    "output_stems",
    "signature",
]
