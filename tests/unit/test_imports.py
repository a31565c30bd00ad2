"""Every module imports cleanly with no AWS credentials, no Redis and no network: clients and
settings are made lazily, never at import."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ("runtime", "stacks", "local", "bench", "ops")


def _modules() -> list[str]:
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)
