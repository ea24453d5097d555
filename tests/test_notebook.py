"""Each notebook executes headless on the tiny study, writes its figures beside itself and
leaves the study's figures as the study drew them."""

import hashlib
import pathlib
import shutil

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
#: the figure each notebook draws (the study drew its own, with its own settings)
DRAWS = {"fig3_examples": "fig3_examples_sim_bus.png",
         "fig4_dice_vs_blocks": "fig4_dice_vs_blocks.png",
         "fig5_activation_maximization": "fig5_activation_maximization.png"}
#: TensorFlow's start-up notices, which must not land in a notebook's output
NOTICES = ("oneDNN", "absl::", "cuda", "TF_ENABLE_ONEDNN_OPTS", "rebuild TensorFlow")


def _snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pathlib.Path(folder).glob("*")) if p.is_file()}


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(tiny_study, nb_path, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    out, _ = tiny_study
    monkeypatch.setenv("UNET_FT_RESULTS", str(out))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    nb = nbformat.read(nb_path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    here = tmp_path / "notebooks"   # where the user keeps the notebook
    here.mkdir()
    shutil.copy(nb_path, here)
    before = _snapshot(out / "figures")
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(here)}}).execute()
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "results folder" in text
    assert "Traceback" not in text
    assert not [n for n in NOTICES if n in text], text
    # the tiny study is a smoke study: the notebook says so, as REPORT.md does at its top
    assert "profile checks that the pipeline runs; its nets are too small to learn" in text
    assert (here / "figures" / DRAWS[nb_path.stem]).exists()
    assert _snapshot(out / "figures") == before   # the study's figures untouched


@pytest.mark.parametrize("where, refused", [
    (lambda out, tmp: None, False),                       # figures/ beside the notebook
    (lambda out, tmp: str(tmp / "mine"), False),
    (lambda out, tmp: str(out / "figures"), True),        # the study's figures
    (lambda out, tmp: str(out), True),
    (lambda out, tmp: str(out / "figures" / ".." / "x"), True),
])
def test_figure_folder_is_never_inside_the_results_folder(tmp_path, monkeypatch, where,
                                                          refused):
    from keras_unet_ft.notebook import figure_folder

    out = tmp_path / "results"
    (out / "figures").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    if refused:
        with pytest.raises(ValueError, match="inside the results folder"):
            figure_folder(out, where(out, tmp_path))
    else:
        folder = figure_folder(out, where(out, tmp_path))
        assert folder.is_dir() and out.resolve() not in folder.resolve().parents


def test_caveats_say_a_smoke_study_is_too_small_to_learn(tmp_path):
    from conftest import make_handmade_results
    from keras_unet_ft.io import read_json, write_json
    from keras_unet_ft.notebook import caveats
    from keras_unet_ft.results import write_tables

    out = make_handmade_results(tmp_path / "r")   # a smoke config
    write_tables(out)
    assert "**The smoke profile checks that the pipeline runs" in caveats(out)
    prov = read_json(out / "config.json")
    prov["config"]["profile"] = "quick"
    write_json(out / "config.json", prov)
    assert caveats(out) == ""
