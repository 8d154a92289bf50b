"""The public API (issue 15): what plugins, notebooks and docs import is ``recplug`` and the plugin packages,
never ``recplug.core``, whose modules may move."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import recplug

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = ["recplug.plugins", "recplug.plugins.fusion", "recplug.plugins.graphs", "recplug.plugins.losses"]


def imported_modules(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
    return modules


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_every_public_name_resolves() -> None:
    for name in recplug.__all__:
        assert getattr(recplug, name) is not None, name
    assert set(recplug.__all__) <= set(dir(recplug))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        recplug.NoSuchThing  # noqa: B018


def test_importing_recplug_does_not_import_lightning() -> None:
    code = "import sys, recplug; from recplug import hookimpl; print('pytorch_lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_each_built_in_component_is_importable_from_its_package(package: str) -> None:
    import importlib

    from recplug import RecComponent

    module = importlib.import_module(package)
    for submodule in Path(module.__file__).parent.glob("*.py"):
        if submodule.name == "__init__.py":
            continue
        inner = importlib.import_module(f"{package}.{submodule.stem}")
        for name, cls in inspect.getmembers(inner, inspect.isclass):
            if issubclass(cls, RecComponent) and cls.__module__ == inner.__name__:
                assert name in module.__all__ and getattr(module, name) is cls, f"{package} does not export {name}"


CONTRIB = sorted((ROOT / "plugins_contrib").rglob("*.py"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", CONTRIB + DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_contrib_packages_and_doc_examples_import_only_the_public_api(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    sources = [text] if path.suffix == ".py" else python_blocks(text)
    private = [m for source in sources for m in imported_modules(source) if m.startswith("recplug.core")]
    assert not private, f"{path.name} imports {private}: import from recplug (the public API) instead"


def test_the_check_finds_a_private_import() -> None:
    assert imported_modules("from recplug.core.model.components import AuxLoss") == ["recplug.core.model.components"]
    assert python_blocks("x\n```python\nimport recplug.core.errors\n```\n") == ["import recplug.core.errors\n"]
