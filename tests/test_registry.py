"""The generic registry behind models, methods and scenarios."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dlfd.errors import ConfigError
from dlfd.registry import Registry


def test_register_get_list_in_registration_order() -> None:
    things: Registry[int] = Registry("thing")
    things.add("b", 2)
    assert things.decorator("a", lambda fn: fn())(lambda: 1)() == 1
    assert things.get("a") == 1 and list(things.items()) == [("b", 2), ("a", 1)]
    assert "a" in things and "c" not in things


def test_duplicate_and_bad_names_raise() -> None:
    things: Registry[int] = Registry("thing")
    things.add("a", 1)
    with pytest.raises(ConfigError, match="a thing named 'a' is already registered"):
        things.add("a", 2)
    for bad in ("", " a", "a "):
        with pytest.raises(ConfigError, match="non-empty string without spaces"):
            things.add(bad, 3)
    assert things.get("a") == 1


def test_unknown_key_names_the_known_ones() -> None:
    things: Registry[int] = Registry("thing")
    things.add("b", 2)
    things.add("a", 1)
    with pytest.raises(ConfigError, match=r"^unknown thing 'c'; known: a, b$"):
        things.get("c")
    with pytest.raises(ConfigError, match="unknown thing"):
        things.get(None)  # type: ignore[arg-type]
    assert isinstance(ConfigError("x"), ValueError)


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for module, source in modules.items():
        (root / name / f"{module}.py").write_text(source)


def test_discover_imports_every_module_first_ones_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    things: Registry[str] = Registry("thing")
    monkeypatch.setattr(sys.modules[__name__], "THINGS", things, raising=False)
    reg = f"from {__name__} import THINGS\nTHINGS.add(__name__.rsplit('.', 1)[1], 'x')\n"
    _package(tmp_path, "reg_pkg_ok", {"alpha": reg, "beta": reg, "zeta": reg})
    monkeypatch.syspath_prepend(str(tmp_path))
    things.discover("reg_pkg_ok", first=("zeta",))
    assert [name for name, _ in things.items()] == ["zeta", "alpha", "beta"]


def test_discover_propagates_import_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path, "reg_pkg_bad", {"good": "", "broken": "import no_such_module_dlfd\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_dlfd"):
        Registry("thing").discover("reg_pkg_bad")
    _package(tmp_path, "reg_pkg_missing", {"good": ""})
    with pytest.raises(ModuleNotFoundError, match=r"reg_pkg_missing\.absent"):
        Registry("thing").discover("reg_pkg_missing", first=("absent",))
