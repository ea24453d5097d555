"""Each figure function on the tiny study; each notebook executes headless."""

import pathlib

import pytest

from keras_unet_ft import figures

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("fn, name", [
    (lambda o: figures.fig4_dice_vs_blocks(o, "path"), "fig4_dice_vs_blocks"),
    (lambda o: figures.fig3_examples(o, "sim_bus"), "fig3_examples_sim_bus"),
    (lambda o: figures.fig3_examples(o, "synth_cxr", n_rows=2), "fig3_examples_synth_cxr"),
    (figures.fig_dice_boxplots, "dice_boxplots"),
    (figures.fig_training_time, "training_time"),
    (figures.fig_param_share, "param_share"),
    (figures.fig_weight_change, "weight_change_sim_bus"),
    (lambda o: figures.fig5_activation_maximization(o, steps=50, n_filters=4),
     "fig5_activation_maximization"),
])
def test_figure_functions(tiny_study, fn, name):
    out, _ = tiny_study
    png = fn(out)
    assert png == out / "figures" / f"{name}.png"
    assert png.stat().st_size > 2000 and png.with_suffix(".pdf").exists()


def test_level_variant_absent_without_level_plans(tiny_study):
    out, _ = tiny_study
    assert figures.fig4_dice_vs_blocks(out, "level") is None


def test_fig3_unknown_id_is_an_error(tiny_study):
    out, _ = tiny_study
    with pytest.raises(ValueError, match="not among the held-out images"):
        figures.fig3_examples(out, "sim_bus", ids=["nope"])


def test_activation_maximization_steps_capped_and_checked(tiny_study):
    out, _ = tiny_study
    model = figures.finetuned_model(out, "sim_bus")
    assert figures.am_layers(model) == ["enc2_conv2", "dec1_conv2"]
    imgs = figures.activation_maximization(model, "enc2_conv2", [0, 1], steps=1000)
    assert imgs.shape == (2, 32, 32, 1) and 0 <= imgs.min() and imgs.max() <= 1
    with pytest.raises(ValueError, match="has 8 filters"):
        figures.activation_maximization(model, "enc2_conv2", [99], steps=2)


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
