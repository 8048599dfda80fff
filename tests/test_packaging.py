"""The installed package (a wheel, as the Docker image installs it) carries every file the
service reads at run time: the page's scripts, vendored assets, templates, migrations."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "livedash"


def test_every_data_file_of_the_package_is_declared_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["livedash"]
    data = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]
    assert data, "no data files found: the test looks in the wrong place"
    # setuptools' globs do not cross directories: "web/static/*" holds no "web/static/js/x".
    missing = [
        name
        for name in data
        if not any(
            fnmatch.fnmatch(name, pattern) and name.count("/") == pattern.count("/")
            for pattern in patterns
        )
    ]
    assert missing == [], f"not in the wheel: {missing}"
