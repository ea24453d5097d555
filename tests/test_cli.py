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


@pytest.mark.parametrize("argv, message", [
    (["study", "--threads", "-1"], "--threads: expected a finite number > 0, got '-1'"),
    (["data", "show", "sim_bus", "--size", "0"], "--size: expected a finite number > 0, got '0'"),
    (["study", "--max-minutes", "0"], "--max-minutes: expected a finite number > 0, got '0'"),
    (["study", "--max-minutes", "nan"], "--max-minutes: expected a finite number > 0, got 'nan'"),
    (["study", "--max-minutes", "-1"], "--max-minutes: expected a finite number > 0, got '-1'"),
    (["study", "--max-minutes", "soon"], "--max-minutes: expected a number > 0, got 'soon'"),
])
def test_bad_numbers_are_refused_before_anything_runs(argv, message, capsys):
    from keras_unet_ft.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("code, path, words", [
    (30, "/ro/out", "Read-only file system /ro/out: the file system is read-only"),
    (28, "/full/x.npz", "disk is full: free space (finished runs are kept) and run again"),
    (13, "/x", "no permission"),
])
def test_io_faults_are_one_sentence(code, path, words):
    import errno

    from keras_unet_ft.cli import io_fault

    assert errno.errorcode[code] in ("EROFS", "ENOSPC", "EACCES")
    assert words in io_fault(OSError(code, os.strerror(code), path))


def test_an_io_fault_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from keras_unet_ft import cli
    from keras_unet_ft.cli import plans

    def read_only(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "out"))

    monkeypatch.setattr(plans, "cmd_plans", read_only)
    assert cli.main(["plans"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only" in err[0] and "Traceback" not in err[0]


def test_files_that_are_not_what_their_name_says(tmp_path):
    from keras_unet_ft.data.preprocess import read_image
    from keras_unet_ft.deploy import load_model

    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image file .*a.png: not an image"):
        read_image(tmp_path / "a.png")
    (tmp_path / "m.keras").write_text("not a model")
    with pytest.raises(ValueError, match="m.keras is not a Keras model file"):
        load_model(tmp_path / "m.keras")


#: command -> exit code + a piece of its message: every error path of the command line
COMMANDS = [
    (["plans", "--size", "100"], 2, "must be divisible by 2**depth"),
    (["plans", "--size", "32", "--plan", "sideways"], 2, "unknown plan 'sideways'"),
    (["plans", "--size", "32", "--plan", "llrd:2"], 2, "0 < GAMMA <= 1"),
    (["study", "--profile", "smoke", "--set", "nosuch.key=1"], 2, "unknown config key"),
    (["study", "--profile", "smoke", "--set", "finetune.epochs=x"], 2,
     "finetune.epochs: expected a whole number, got 'x'"),
    (["run", "--profile", "smoke", "--jobs", "many"], 2, "--jobs expects a number or auto"),
    (["data", "show"], 2, "needs a dataset"),
    (["data", "prepare", "sim_bsu"], 2, "did you mean sim_bus"),
    (["data", "realism", "folder:{tmp}"], 2, "needs --pretrained"),
    (["data", "realism", "folder:{tmp}", "--pretrained", "{tmp}/nothing"], 2,
     "no model.keras there"),
    (["report", "{tmp}"], 2, "results folder"),
    (["predict", "{tmp}/missing.keras", "{tmp}", "--out", "{tmp}/masks"], 2, "missing.keras"),
    (["export", "{tmp}/missing.keras", "--format", "tflite"], 2, "missing.keras"),
    (["plans", "--size", "32", "--base-filters", "4", "--depth", "2"], 0, ""),
]


@pytest.mark.parametrize("argv, code, message", COMMANDS)
def test_commands_exit_codes_and_messages(argv, code, message, tmp_path, capsys):
    from keras_unet_ft.cli import main

    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_bug_is_a_traceback_and_a_request_for_a_report_exit_1(monkeypatch, capsys):
    from keras_unet_ft import cli
    from keras_unet_ft.cli import plans

    def bug(args):
        return {}["no such key"]

    monkeypatch.setattr(plans, "cmd_plans", bug)
    assert cli.main(["plans"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert "internal error" in err and "please report it" in err


def test_an_internal_value_error_is_a_bug_not_a_bad_input(monkeypatch, capsys):
    """Only UserError (and missing files) mean "bad input" (exit 2)."""
    from keras_unet_ft import cli
    from keras_unet_ft.cli import plans

    def bug(args):
        raise ValueError("shapes differ")

    monkeypatch.setattr(plans, "cmd_plans", bug)
    assert cli.main(["plans"]) == 1
    assert "internal error" in capsys.readouterr().err
