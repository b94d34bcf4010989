"""The architecture rules of ../shared/design.md §2, read from the imports."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "ocs"

FORBIDDEN = {
    # the protocol core is sans-I/O: no event loop, sockets, clocks or storage
    "ocs/diameter": {"asyncio", "socket", "time", "lmdb", "selectors", "threading", "ocs.net",
                     "ocs.store", "ocs.charging", "ocs.service", "ocs.cli"},
    "ocs/charging": {"asyncio", "socket", "lmdb", "ocs.net", "ocs.store", "ocs.service"},
    "ocs/store": {"asyncio", "ocs.diameter", "ocs.net", "ocs.service", "ocs.charging"},
    "ocs/net": {"ocs.service", "ocs.cli"},
    # the gateways talk to the master DB and the cache, never to Diameter peers
    "ocs/gateways": {"asyncio", "ocs.diameter", "ocs.net", "ocs.service", "ocs.cli"},
    # the load generator is a Diameter client of its own: the codec and the stdlib only
    "ocs/load": {"ocs.net", "ocs.store", "ocs.charging", "ocs.service", "ocs.gateways", "ocs.cli",
                 "ocs.workers", "ocs.metrics", "ocs.admin", "ocs.health", "lmdb"},
}


def imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
    return out


def test_layers():
    problems = []
    checked = 0
    for folder, banned in FORBIDDEN.items():
        for path in (ROOT.parent / folder).rglob("*.py"):
            checked += 1
            for mod in imports(path):
                if any(mod == b or mod.startswith(b + ".") for b in banned):
                    problems.append(f"{path.relative_to(ROOT.parent)} imports {mod}")
    assert checked > 10
    assert problems == []


def test_load_generator_uses_the_codec_and_the_stdlib_only():
    """ocs/load ships with the node (`ocs load`) but is none of it: besides the
    stdlib it imports the Diameter codec (ocs.diameter) and itself only."""
    import sys
    folder = ROOT / "load"
    problems = []
    for path in folder.glob("*.py"):
        for mod in imports(path):
            top = mod.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            if any(mod == m or mod.startswith(m + ".") for m in ("ocs.diameter", "ocs.load")):
                continue
            problems.append(f"{path.name} imports {mod}")
    assert len(list(folder.glob("*.py"))) >= 7
    assert problems == []


def test_files_stay_small():
    big = [(p.name, n) for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500]
    assert big == []


def test_engine_knows_no_diameter():
    """Only charging/mapping.py (and cca.py, its fast answer encoder) convert
    Diameter; the engine, rating, ledger and records work on domain types."""
    folder = ROOT / "charging"
    offenders = [p.name for p in folder.glob("*.py") if p.name not in ("mapping.py", "cca.py")
                 and any(m == "ocs.diameter" or m.startswith("ocs.diameter.") for m in imports(p))]
    assert len(list(folder.glob("*.py"))) > 8
    assert offenders == []
