"""The method registry: methods are found by name; the catalog that lists them without torch is current."""

from __future__ import annotations

import json
import subprocess
import sys

from growsearch.methods.registry import CATALOG, METHODS, _info, _load_all, get_method, method_infos


def test_the_catalog_lists_every_method_as_its_class_declares_it():
    _load_all()
    builtin = sorted(
        (_info(cls) for cls in METHODS.values() if cls.__module__.startswith("growsearch.methods.")),
        key=lambda info: info.name,
    )
    listed = json.loads(CATALOG.read_text())["methods"]
    assert [tuple(e.values()) for e in listed] == [
        (i.name, i.paper, list(i.scenarios), i.module, list(i.backbones)) for i in builtin
    ], "growsearch/methods/catalog.json is stale: run `python -m growsearch.methods`"
    assert [i.name for i in method_infos()] == [i.name for i in builtin]
    for info in builtin:
        assert get_method(info.name).__module__ == info.module


def test_listing_methods_benchmarks_and_scenarios_imports_neither_torch_nor_ray():
    script = (
        "import sys\n"
        "from growsearch.cli import app\n"
        "for what in ('methods', 'benchmarks', 'scenarios'):\n"
        "    try:\n"
        "        app(['list', what], prog_name='growsearch')\n"
        "    except SystemExit as done:\n"
        "        assert not done.code, done.code\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "pnn" in done.stdout and "split-digits" in done.stdout and "class-il" in done.stdout
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
