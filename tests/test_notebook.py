"""Each notebook executes headless on the tiny study."""

import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(tiny_study, nb_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out, _ = tiny_study
    monkeypatch.setenv("UNET_FT_RESULTS", str(out))
    nb = nbformat.read(nb_path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "results folder" in text
    assert "Traceback" not in text
