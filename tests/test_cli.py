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


#: bad inputs found before the backend is imported: command -> a piece of its one-line message
#: (exit 2, TensorFlow not imported, nothing written)
BEFORE_BACKEND = [
    (["study", "--profile", "quik"],
     "unknown profile 'quik'; did you mean 'quick'? (profiles: paper, quick, faithful"),
    (["run", "--profile", "smokey"], "did you mean 'smoke'?"),
    (["study", "--profile", "smoke", "--seed", "-1"],
     "bad value for study.seed: -1; expected a number >= 0 and < 2147483648"),
    (["study", "--profile", "smoke", "--seed", "2147483648"], "study.seed: 2147483648"),
    (["study", "--profile", "smoke", "--set", "finetune.warmup_epochs=100"],
     "finetune.warmup_epochs=100 must be below finetune.epochs=2"),
    (["study", "--profile", "smoke", "--set", "finetune.epochs=x"],
     "finetune.epochs: expected a whole number, got 'x'"),
    (["study", "--profile", "smoke", "--target", "sim_bsu"], "did you mean sim_bus"),
    (["study", "--profile", "smoke", "--target", "sim_bus?nn=3"],
     "sim_bus: unknown option(s) ['nn']"),
    (["study", "--profile", "smoke", "--target", "sim_bus", "--target", "sim_bus"],
     "give each target once"),
    (["study", "--profile", "smoke", "--plans", "sideways"], "unknown plan 'sideways'"),
    (["study", "--profile", "smoke", "--plans", "contracting,autorgn", "--set",
      "study.trainer=keras"],
     "the keras trainer (study.trainer=keras) cannot train the plan 'autorgn', which needs "
     "the selective or masked trainer"),
    (["pretrain", "--profile", "smoke", "--dataset", "synth_salient?n=x"],
     "option n='x': expected a whole number"),
    (["finetune", "--profile", "smoke", "--target", "folder:/data?mask_sufix=_m", "--plan",
      "all", "--out", "m"], "folder: unknown option(s) ['mask_sufix']"),
    (["finetune", "--profile", "smoke", "--target", "sim_bus", "--plan", "bitfit", "--set",
      "study.trainer=keras", "--out", "m"], "cannot train the plan 'bitfit'"),
    (["advise", "--profile", "smoke", "--target", "sim_bus", "--plans", "llrd:2",
      "--out", "a"], "0 < GAMMA <= 1"),
    (["advise", "--profile", "smoke", "--target", "sim_bus", "--set", "finetune.folds=1",
      "--out", "a"], "finetune.folds: 1"),
]


@pytest.fixture(scope="module")
def before_backend(tmp_path_factory):
    """Every command of :data:`BEFORE_BACKEND` in one fresh process, in an empty folder:
    its exit code, its error output and whether TensorFlow was imported by then."""
    import json

    cwd = tmp_path_factory.mktemp("cwd")
    code = ("import contextlib, io, json, sys\nfrom keras_unet_ft.cli import main\nout = []\n"
            f"for argv in {[a for a, _ in BEFORE_BACKEND]!r}:\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        try:\n            code = main(argv)\n"
            "        except SystemExit as e:\n            code = e.code\n"
            "    out.append([code, err.getvalue(), 'tensorflow' in sys.modules])\n"
            "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                       timeout=300, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("i", range(len(BEFORE_BACKEND)),
                         ids=[" ".join(a[:3]) for a, _ in BEFORE_BACKEND])
def test_bad_inputs_fail_before_the_backend_is_imported(i, before_backend):
    cwd, results = before_backend
    code, err, tensorflow = results[i]
    assert code == 2, err
    assert BEFORE_BACKEND[i][1] in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not tensorflow
    assert not any(cwd.iterdir())   # nothing written


#: a study (or a fine-tuning) that fails before writing anything: command, what --out holds
#: before, a piece of the message; afterwards the folder is as it was (none when there was none)
FAILS_EARLY = [
    (["study", "--target", "folder:{tmp}/missing"], None, "does not exist"),
    (["study", "--target", "folder:{tmp}/missing"], {"notes.txt": "mine"}, "does not exist"),
    (["study", "--target", "folder:{tmp}/missing"], {".study.lock": ""}, "does not exist"),
    # a plan the trainer auto resolves to (Keras' own, for fp16) cannot train
    (["study", "--plans", "contracting,autorgn", "--precision", "fp16"], None,
     "the keras trainer (study.trainer=auto with precision fp16) cannot train the plan "
     "'autorgn'"),
    (["finetune", "--target", "sim_bus", "--plan", "bitfit", "--precision", "fp16"], None,
     "the keras trainer (study.trainer=auto with precision fp16) cannot train the plan "
     "'bitfit'"),
]


@pytest.mark.parametrize("argv, had, message", FAILS_EARLY)
def test_a_study_that_fails_early_leaves_no_folder_it_made(argv, had, message, tmp_path,
                                                         capsys):
    from keras_unet_ft.cli import main

    out = tmp_path / "new" / "r" if had is None else tmp_path / "r"
    for name, text in (had or {}).items():
        out.mkdir(exist_ok=True)
        (out / name).write_text(text)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    sets = ["--profile", "smoke", "--set", "data.target_n=8", "--set", "data.cache=false"]
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]
                + ["--out", str(out)] + sets) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
