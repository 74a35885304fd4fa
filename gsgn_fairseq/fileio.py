"""Small file helpers shared by the scripts."""
import json
import os
from pathlib import Path


def write_json_atomic(path, obj) -> None:
    """``obj`` as indented JSON at ``path``, written to a temporary file and renamed, so a
    reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
