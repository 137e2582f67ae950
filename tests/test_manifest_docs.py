"""manifests/README.md documents every manifest column (the clip columns and every stage's), with
the description its declaration gives."""
import re
from pathlib import Path

from svdcli.curate import stages
from svdcli.manifest.schema import COLUMNS

README = Path(__file__).resolve().parents[1] / "manifests" / "README.md"


def test_every_column_is_documented_as_the_schema_defines_it():
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `(\w+)` \| (\w+) \| [^|]+ \| (.*) \|$", README.read_text(), re.M)}
    missing = sorted(set(COLUMNS) - set(rows))
    assert not missing, f"columns missing from manifests/README.md: {missing}"
    stale = [n for n, c in COLUMNS.items() if rows[n] != (c.stage, c.doc)]
    assert not stale, f"manifests/README.md rows differ from the column declarations: {stale}"


def test_the_catalogue_holds_every_stage_column_once_in_stage_order():
    declared = [c.name for c in stages.stage_columns()]
    assert list(COLUMNS)[-len(declared):] == declared  # after the clip columns, in registry order
    owners = [COLUMNS[name].stage for name in declared]
    assert owners == sorted(owners, key=stages.NAMES.index)
