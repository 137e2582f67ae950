"""The diffusion room is the ground floor: it imports no other svdcli package but svdcli.errors."""
from __future__ import annotations

import ast
from pathlib import Path

import svdcli.diffusion

ROOM = Path(svdcli.diffusion.__file__).parent


def _svdcli_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("svdcli.diffusion")  # relative imports stay inside the room
    return {n for n in names if n == "svdcli" or n.startswith("svdcli.")}


def test_diffusion_imports_only_itself_and_errors():
    files = sorted(ROOM.glob("*.py"))
    assert {f.name for f in files} >= {"scalings.py", "schedules.py", "samplers.py", "ddim.py", "edm.py"}
    for path in files:
        outside = {n for n in _svdcli_imports(path)
                   if not (n == "svdcli.errors" or n == "svdcli.diffusion" or n.startswith("svdcli.diffusion."))}
        assert not outside, f"{path.name} imports {sorted(outside)}"
