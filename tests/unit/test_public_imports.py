"""Stagecoach uses Dagster's, paramiko's and splink's public APIs only: a private module, name
or member (`dagster._core...`, `from paramiko import _x`, `client._transport`,
`getattr(x, "_y")`, `splink.internals`) breaks on any upgrade without a deprecation. The
package's sources are read as syntax trees, so a new private use fails here whatever it is
for."""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestration", "assets", "resources", "sensors")
WATCHED = ("dagster", "paramiko", "splink")  # libraries whose private names are refused
INTERNAL = {"internals"}  # splink's private package: its public names are re-exported

# Known exceptions, by file and member: none. Nothing may be added here without an issue that
# owns replacing it (resources/connections/sftp.py's pipeline was the last: it now speaks SFTP on
# a channel opened through paramiko's public Transport API).
KNOWN: set[tuple[str, str]] = set()


# Documented public functions whose names start with an underscore.
PUBLIC_UNDERSCORED = {"_exit", "_asdict", "_replace", "_fields", "_make"}


def is_private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name in INTERNAL or (name.startswith("_") and not dunder
                                and name not in PUBLIC_UNDERSCORED)


def private_uses(source: str) -> list[tuple[int, str, str]]:
    """(line, private name, what it is) of every private use in one module's source."""
    tree = ast.parse(source)
    # Whose private members a module may use: its own objects' and its own classes'.
    own = {"self", "cls"} | {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in WATCHED and any(map(is_private, parts)):
                    found.append((node.lineno, alias.name, "a private module"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] not in WATCHED:
                continue
            if any(map(is_private, parts)):
                found.append((node.lineno, node.module, "a private module"))
            found += [(node.lineno, f"{node.module}.{alias.name}", "a private name")
                      for alias in node.names if is_private(alias.name)]
        elif isinstance(node, ast.Attribute) and is_private(node.attr) and not (
                isinstance(node.value, ast.Name) and node.value.id in own):
            found.append((node.lineno, node.attr, "another object's private member"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1
              and not (isinstance(node.args[0], ast.Name) and node.args[0].id in own)
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and is_private(node.args[1].value)):
            found.append((node.lineno, node.args[1].value, "a private member by name"))
    return found


def package_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_module_uses_a_private_dagster_or_paramiko_name():
    problems, used_known = [], set()
    for path in package_modules():
        relative = path.relative_to(ROOT).as_posix()
        for line, name, what in private_uses(path.read_text(encoding="utf-8")):
            if (relative, name) in KNOWN:
                used_known.add((relative, name))
                continue
            problems.append(f"{relative}:{line}: {name} is {what}; use the library's public "
                            "API (or Stagecoach's own bookkeeping) instead")
    assert not problems, "\n".join(problems)
    assert used_known == KNOWN, (f"known exceptions no longer used, remove them from KNOWN: "
                                 f"{sorted(KNOWN - used_known)}")


def test_the_check_finds_each_kind_of_private_use():
    """The scanner itself: each way of reaching a private name is caught, public ones are not."""
    source = """
import dagster as dg
import dagster._core.storage
from dagster._utils.schedules import is_valid_cron_string
from paramiko import _version
from paramiko.sftp import CMD_READ
import dagster._check as check
from splink.internals.exceptions import EMTrainingException

class Mine:
    def _helper(self):
        return Mine._other(), getattr(self, "_state", None)

def f(storage, client):
    storage._storage.run_storage
    getattr(client, "_transport")
    self._mine = client.__class__
    return dg.AssetKey("x"), CMD_READ
"""
    found = {(name, what) for _, name, what in private_uses(source)}
    assert found == {
        ("dagster._core.storage", "a private module"),
        ("dagster._utils.schedules", "a private module"),
        ("paramiko._version", "a private name"),
        ("dagster._check", "a private module"),
        ("splink.internals.exceptions", "a private module"),
        ("_storage", "another object's private member"),
        ("_transport", "a private member by name"),
    }


def test_no_package_module_is_exempt_from_ruffs_private_member_rule():
    """ruff's SLF001 (private member access) is the same check at lint time: a per-file
    exemption for a package module would hide what the syntax-tree scan above must see."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lint = config["tool"]["ruff"]["lint"]
    assert "SLF001" in lint["select"]
    exempt = [pattern for pattern, rules in lint.get("per-file-ignores", {}).items()
              if "SLF001" in rules and pattern.split("/")[0] in PACKAGES]
    assert not exempt, f"package files exempt from SLF001 in pyproject.toml: {exempt}"
    assert "SLF001" not in lint.get("ignore", [])
