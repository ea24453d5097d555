"""The command line's face: help and version without TensorFlow, no start-up notices."""

import os
import subprocess
import sys

import pytest

from keras_unet_ft import __version__

ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, timeout=300)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["study", "--help"],
                                  ["advise", "--help"], ["export", "--help"]])
def test_help_and_version_import_no_keras_or_tensorflow(argv):
    r = _python("import sys\nfrom keras_unet_ft.cli import main\n"
                f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
                "heavy = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
                "print('HEAVY', heavy)")
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_version_prints_the_package_version():
    r = subprocess.run([sys.executable, "-m", "keras_unet_ft.cli", "--version"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"unet-ft {__version__}"


def test_a_command_prints_no_tensorflow_notice_unless_verbose():
    cmd = [sys.executable, "-m", "keras_unet_ft.cli", "plans", "--size", "32",
           "--base-filters", "4", "--depth", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("model unet: input 32x32x1")
    for notice in ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "TF-TRT"):
        assert notice not in r.stderr, r.stderr


def test_run_all_help_imports_nothing_heavy():
    script = os.path.join(os.path.dirname(__file__), "..", "experiments", "run_all.py")
    r = _python("import runpy, sys\nsys.argv = ['run_all.py', '--help']\n"
                f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print('HEAVY', [m for m in ('tensorflow', 'keras') if m in sys.modules])")
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
