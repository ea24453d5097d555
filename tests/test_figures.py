"""Each figure function on the tiny study; each notebook executes headless."""

import numpy as np
import pytest

from keras_unet_ft import figures

@pytest.mark.parametrize("fn, name", [
    (lambda o: figures.fig4_dice_vs_blocks(o, "path"), "fig4_dice_vs_blocks"),
    (lambda o: figures.fig3_examples(o, "sim_bus"), "fig3_examples_sim_bus"),
    (lambda o: figures.fig3_examples(o, "synth_cxr", n_rows=2), "fig3_examples_synth_cxr"),
    (figures.fig_dice_boxplots, "dice_boxplots"),
    (figures.fig_training_time, "training_time"),
    (figures.fig_param_share, "param_share"),
    (lambda o: figures.fig_dice_vs_params(o, "sim_bus"), "dice_vs_params_sim_bus"),
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
    model = figures.finetuned_model(out, "sim_bus")  # model.keras kept by the study
    assert figures.am_layers(model) == ["enc2_conv2", "dec1_conv2"]
    imgs = figures.activation_maximization(model, "enc2_conv2", [0, 1], steps=1000)
    assert imgs.shape == (2, 32, 32, 1) and 0 <= imgs.min() and imgs.max() <= 1
    with pytest.raises(ValueError, match="has 8 filters"):
        figures.activation_maximization(model, "enc2_conv2", [99], steps=2)


def test_fig5_needs_saved_weights_and_never_retrains(tiny_study, tmp_path):
    import shutil

    out, _ = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for w in copy.glob("runs/*/*/fold_*/model.keras"):
        w.unlink()
    assert figures.fig5_activation_maximization(copy, steps=2) is None
    with pytest.raises(FileNotFoundError, match="study.save_weights"):
        figures.finetuned_model(copy, "sim_bus")


def test_study_keeps_only_the_weights_the_figures_need(tiny_study):
    out, _ = tiny_study
    kept = sorted(str(p.relative_to(out)) for p in out.glob("runs/*/*/fold_*/model.keras"))
    assert kept == ["runs/sim_bus/shallow_to_deep-9/fold_0/model.keras",
                    "runs/synth_cxr/shallow_to_deep-9/fold_0/model.keras"]


def test_report_command_builds_no_model(tiny_study, monkeypatch, tmp_path):
    """``unet-ft report`` reads files: building a model there is an error."""
    import shutil

    from keras_unet_ft import model as model_mod
    from keras_unet_ft.cli import main

    out, _ = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setattr(model_mod, "build_model", lambda *a, **k: pytest.fail("built a model"))
    assert main(["report", str(copy), "--no-figures"]) == 0
    assert (copy / "REPORT.md").read_text() == (out / "REPORT.md").read_text().replace(
        str(out), str(copy))


def test_activation_maximization_is_not_saturated(tiny_study, monkeypatch):
    """tf-keras-vis' default step (RMSprop 1.0) drives almost every pixel to 0 or 1;
    the figure's Adam step and regularisers keep the pattern inside the range."""
    monkeypatch.delenv(figures.MAX_AM_STEPS_ENV, raising=False)
    out, _ = tiny_study
    model = figures.finetuned_model(out, "sim_bus")
    imgs = figures.activation_maximization(model, "enc2_conv2", [0, 1, 2, 3], steps=60)
    saturated = float(np.mean((imgs <= 1e-3) | (imgs >= 1 - 1e-3)))
    assert saturated < 0.25, saturated
    assert float(imgs.std()) > 1e-3


@pytest.mark.parametrize("pattern, flat", [
    (np.linspace(0.4, 0.6, 100).reshape(10, 10), False),
    (np.full((10, 10), 0.5), True),
])
def test_for_display_stretches_or_says_flat(pattern, flat):
    shown, is_flat = figures.for_display(pattern)
    assert is_flat == flat and shown.min() >= 0 and shown.max() <= 1
    if not flat:
        assert shown.min() == 0 and shown.max() == 1


def test_fig3_draws_from_the_results_folder_alone(tiny_study, tmp_path, caplog):
    """The study keeps each target's images (examples/); without them (a folder of an older
    version) Fig. 3 is left out with a warning saying how to get it, and no dataset is read."""
    import shutil

    from keras_unet_ft.layout import EXAMPLES, load_target_images

    out, _ = tiny_study
    ids, images, masks = load_target_images(out, "sim_bus")
    assert images.shape == masks.shape and len(ids) == len(images)
    assert 0 <= images.min() and images.max() <= 1 and masks.any()
    old = tmp_path / "old"
    shutil.copytree(out, old)
    shutil.rmtree(old / EXAMPLES)
    assert figures.fig3_examples(old, "sim_bus") is None
    assert "run the study into it again" in caplog.text


def _close_plans(n_points, spread):
    """Summary rows of plans whose points crowd one spot (about 12 of 20 labels were
    unreadable in a real 20-plan study)."""
    names = ([f"shallow_to_deep:{k}" for k in range(1, 10)]
             + [f"deep_to_shallow:{k}" for k in range(1, 10)]
             + ["contracting", "expanding", "bitfit", "llrd:0.5"])[:n_points]
    rng = np.random.default_rng(0)
    rows = []
    for i, name in enumerate(names):
        d = 0.80 + spread * rng.uniform(-1, 1)
        rows.append({"target": "t", "plan": name, "dice_images_mean": d,
                     "dice_ci_low": d - 0.02, "dice_ci_high": d + 0.02,
                     "trainable_params": int(10_000 * (1 + spread * rng.uniform(0, 1)))})
    return rows + [{"target": "t", "plan": "none", "dice_images_mean": 0.5,
                    "trainable_params": 0}]


@pytest.mark.parametrize("n_points, spread", [(20, 0.01), (20, 0.0), (22, 0.3), (3, 0.01)])
def test_dice_vs_params_labels_never_overlap(n_points, spread):
    fig = figures.dice_vs_params_figure(_close_plans(n_points, spread), "t")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [t for t in fig.axes[0].texts if t.get_gid() == figures.POINT_NUMBER_GID]
        listing = [t for t in fig.axes[0].texts if t.get_gid() == "plan-list"]
        assert sorted(int(t.get_text()) for t in texts) == list(range(1, n_points + 1))
        boxes = [t.get_window_extent(renderer) for t in texts + listing]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
        named = "\n".join(t.get_text() for t in listing)   # every number names its plan
        for row in _close_plans(n_points, spread)[:-1]:
            assert f" {row['plan']}" in named
    finally:
        figures._plt().close(fig)


# -- fast: the hand-made results folder of the report tests (no study, no model) ------------
@pytest.fixture
def handmade(tmp_path):
    from conftest import make_handmade_results
    from keras_unet_ft.results import write_tables

    out = make_handmade_results(tmp_path / "r")
    write_tables(out)
    return out


@pytest.mark.parametrize("fn, name", [
    (figures.fig_dice_boxplots, "dice_boxplots"),
    (figures.fig_training_time, "training_time"),
    (figures.fig_param_share, "param_share"),
    (lambda o: figures.fig_dice_vs_params(o, "sim_bus"), "dice_vs_params_sim_bus"),
])
def test_figures_of_the_handmade_folder(handmade, fn, name):
    png = fn(handmade)
    assert png == handmade / "figures" / f"{name}.png"
    assert png.stat().st_size > 2000 and png.with_suffix(".pdf").exists()


def test_figures_without_their_data_are_left_out(handmade):
    """No block-curve plans, no weight changes, no dataset-size study, no kept images and no
    kept model in the hand-made folder: those figures are None, never an error."""
    assert figures.fig4_dice_vs_blocks(handmade, "path") is None
    assert figures.fig4_dice_vs_blocks(handmade, "level") is None
    assert figures.fig_weight_change(handmade) is None
    assert figures.fig_dice_vs_size(handmade) is None
    assert figures.fig3_examples(handmade, "sim_bus") is None
    assert figures.fig5_activation_maximization(handmade, steps=1) is None


def test_all_figures_read_the_folder_once(handmade, monkeypatch):
    """make_all_figures loads the folder once: each table and runs.json read at most once,
    each run's per-image scores at most once (they were read 12 times, once per figure)."""
    from collections import Counter

    from keras_unet_ft import results

    reads = Counter()
    read_csv, read_manifest = results.read_csv, results.read_manifest
    monkeypatch.setattr(results, "read_csv",
                        lambda p: reads.update([str(p)]) or read_csv(p))
    monkeypatch.setattr(results, "read_manifest",
                        lambda o: reads.update(["runs.json"]) or read_manifest(o))
    made = figures.make_all_figures(handmade, steps=1)
    assert sorted(p.name for p in made) == ["dice_boxplots.png", "dice_vs_params_sim_bus.png",
                                            "param_share.png", "training_time.png"]
    assert reads and max(reads.values()) == 1, reads


def test_a_loaded_folder_draws_what_its_path_draws(handmade, tmp_path):
    """The figures drawn from the tables pipeline.aggregate computed (LoadedFolder.from_tables)
    are those drawn from the files."""
    import shutil

    from keras_unet_ft.results import LoadedFolder, compute_tables

    copy = tmp_path / "copy"
    shutil.copytree(handmade, copy)
    a = figures.make_all_figures(handmade, steps=1)
    b = figures.make_all_figures(LoadedFolder.from_tables(copy, compute_tables(copy)), steps=1)
    assert [p.name for p in a] == [p.name for p in b]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))
