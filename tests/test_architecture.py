"""The one-way architecture: no import cycles, nothing set or loaded at import."""

import os
import subprocess
import sys

import grimp

PACKAGE = "keras_unet_ft"


def test_no_import_cycles_function_level_imports_included():
    graph = grimp.build_graph(PACKAGE)  # every import statement, also inside functions
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != PACKAGE and graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported))
    assert cycles == []


def test_importing_the_package_sets_nothing_and_loads_no_tensorflow():
    code = ("import os, sys; before = dict(os.environ); import keras_unet_ft; "
            "print(dict(os.environ) == before, 'tensorflow' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.split() == ["True", "False"]
