"""docs/architecture.md says what the import-linter contract enforces."""

import configparser
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]


def _contract_layers():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [sorted(m.strip().removeprefix("keras_unet_ft.") for m in line.split("|"))
            for line in lines if line.strip()]


def _documented_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("<!-- layers: begin -->")[1].split("<!-- layers: end -->")[0]
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    return [sorted(re.findall(r"`([a-z_]+)`", row.split("|")[2])) for row in rows]


def test_architecture_doc_lists_the_contract_layers_in_order():
    assert _documented_layers() == _contract_layers()


def test_every_module_of_the_package_is_in_a_layer():
    layered = {m for layer in _contract_layers() for m in layer}
    package = ROOT / "keras_unet_ft"
    top = ({p.stem for p in package.glob("*.py") if p.stem != "__init__"}
           | {p.name for p in package.iterdir() if (p / "__init__.py").exists()})
    assert top == layered, (top - layered, layered - top)
