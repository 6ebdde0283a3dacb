"""The README's layout table names every module of every installed package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "registry", "traffic", "trainer", "encoder", "client")


def test_every_module_is_in_the_readme_layout_table() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py" and path.name not in layout
    ]
    assert not missing, f"modules missing from the README's layout table: {missing}"
