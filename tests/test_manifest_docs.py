"""manifests/README.md documents every schema column, with the schema's own description."""
import re
from pathlib import Path

from svdcli.manifest.schema import COLUMNS

README = Path(__file__).resolve().parents[1] / "manifests" / "README.md"


def test_every_column_is_documented_as_the_schema_defines_it():
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `(\w+)` \| (\w+) \| [^|]+ \| (.*) \|$", README.read_text(), re.M)}
    missing = sorted(set(COLUMNS) - set(rows))
    assert not missing, f"columns missing from manifests/README.md: {missing}"
    stale = [n for n, c in COLUMNS.items() if rows[n] != (c.stage, c.doc)]
    assert not stale, f"manifests/README.md rows differ from svdcli/manifest/schema.py: {stale}"
