"""End to end: the tiny study on another Keras backend (jax, torch), in its own process."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import TINY


@pytest.mark.parametrize("name", [
    pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(b) is None,
                                             reason=f"{b} is not installed"))
    for b in ("jax", "torch")])
def test_a_tiny_study_runs_on_another_backend(tmp_path, name):
    """The real pipeline with ``KERAS_BACKEND=jax`` / ``torch``: pretraining, the grid with
    Keras' trainer, results, REPORT.md; Fig. 5 (tf-keras-vis) is skipped with a reason."""
    over = {**TINY, "data.targets": "sim_bus", "study.plans": "contracting,expanding",
            "study.save_weights": "none"}
    code = ("import sys; from keras_unet_ft.config import load_config; "
            "from keras_unet_ft.pipeline import run; "
            f"run(load_config('smoke', {over!r}), {str(tmp_path / 'out')!r}, jobs=1)")
    env = {**os.environ, "KERAS_BACKEND": name, "UNET_FT_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    head = rows[0].split(",")
    body = [dict(zip(head, r.split(","))) for r in rows[1:]]
    assert len(body) == 2 * 4 and {r["status"] for r in body} == {"ok"}   # 2 plans + 2 baselines
    assert {r["backend"] for r in body} == {name} and {r["trainer"] for r in body} == {"keras"}
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["versions"]["keras_backend"] == name
    assert "Fig. 5 not drawn" in p.stderr and (tmp_path / "out" / "REPORT.md").exists()
