"""The package's layering: offline preparation (prep/) and the console tools (cli/) share only
modules below both; the console tools are never imported by preparation."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gsgn_fairseq"


def imported_modules(path: Path):
    """Absolute names of the gsgn_fairseq modules ``path`` imports (relative imports resolved)."""
    here = ["gsgn_fairseq", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield from ([f"{name}.{a.name}" for a in node.names] if not node.module else [name])
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_preparation_does_not_import_the_console_tools():
    upward = {str(p.relative_to(PACKAGE)): m for p in (PACKAGE / "prep").glob("*.py") for m in imported_modules(p)
              if m == "gsgn_fairseq.cli" or m.startswith("gsgn_fairseq.cli.")}
    assert not upward, upward

