#!/usr/bin/env python
"""Benchmarks that print tables (speed targets live here, never in tests).

    python benchmarks/bench.py                 # every section
    python benchmarks/bench.py train plans     # some sections: train, plans, pipeline, data, peak
    BENCH_CONFIGS=quick BENCH_PRECISIONS=fp32 python benchmarks/bench.py train   # a subset

Sections:
  peak      matmul GFLOP/s of this machine (fp32, bf16), the reference for "fraction of peak"
  train     images/s and achieved GFLOP/s of the package's training path (MaskedTrainer on a
            tf.data pipeline) vs a plain ``model.fit`` on NumPy arrays, same architecture,
            for the quick and the paper configuration, fp32 and bf16
  plans     step time per plan: selective trainer, masked trainer and Keras (apply_plan + fit)
  grid      the quick fine-tuning grid end to end, masked trainer vs selective trainer
  pipeline  augmentation + batching + prefetch alone, images/s, vs the training rate
  data      built-in data generation, images/s per generator
  torch     the package's training path vs the same U-Net in PyTorch (if torch is installed)
  encoders  seconds per fine-tuning epoch (all layers, the selective trainer) of every network
            kind at the quick size (64 px, base 8, batch 8, 200 images), the paper's U-Net
            beside the encoder U-Nets (random encoder weights: speed does not depend on them)
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

CONFIGS = {  # name: (size, base filters, batch)
    "quick": (64, 8, 8),
    "mid": (128, 16, 8),
    "paper": (256, 64, 2),
}
STEPS = {"quick": 150, "paper": 4}  # quick: one epoch of the quick profile


def conv_flops(model) -> float:
    """Forward FLOPs per image (2 x multiply-adds of every conv / transposed conv)."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            k = np.prod(layer.kernel_size)
            cin = layer.input.shape[-1]
            out = layer.output.shape
            total += 2.0 * k * cin * out[1] * out[2] * out[3]
    return total


def peak(dtype: str = "float32", n: int = 2048, reps: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    t = time.perf_counter()
    for _ in range(reps):
        r = f(a)
    r.numpy()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def _session(precision):
    from keras_unet_ft.runtime import fresh_session

    fresh_session(0, precision)


def _package_rate(x, y, base, batch, precision) -> float:
    """images/s of the study's training path (masked trainer + tf.data), one timed epoch."""
    from keras_unet_ft.model import build_unet
    from keras_unet_ft.trainers import MaskedTrainer
    from keras_unet_ft.runtime import make_dataset

    _session(precision)
    tr = MaskedTrainer(build_unet(x.shape[1:], base), 1e-4)
    tr.fit(make_dataset(x[:batch * 2], y[:batch * 2], batch), 1)  # trace + warm up
    t = time.perf_counter()
    tr.fit(make_dataset(x, y, batch, shuffle=True), 1)
    return len(x) / (time.perf_counter() - t)


def bench_train(precisions=tuple(os.environ.get("BENCH_PRECISIONS", "fp32,bf16").split(","))):
    from keras_unet_ft.model import build_unet
    from keras_unet_ft.runtime import configure_cpu_threads

    peaks = {"fp32": peak("float32"), "bf16": peak("bfloat16")}
    print(f"\n## Training throughput (peak matmul: fp32 {peaks['fp32']:.0f}, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s)\n")
    print("| config | precision | path | images/s | GFLOP/s | % of peak | ratio package/plain |")
    print("|---|---|---|---|---|---|---|")
    chosen = os.environ.get("BENCH_CONFIGS", ",".join(CONFIGS)).split(",")
    for name, (size, base, batch) in CONFIGS.items():
        if name not in chosen:
            continue
        n = batch * STEPS[name]
        configure_cpu_threads(base)  # as the study; only before TensorFlow starts
        x = np.random.default_rng(0).random((n, size, size, 1), dtype=np.float32)
        y = (x > 0.5).astype(np.uint8)
        for prec in precisions:
            rates = {}
            # plain Keras fit on NumPy arrays (what users do)
            _session(prec)
            m = build_unet((size, size, 1), base)
            flops = 3 * conv_flops(m)  # forward + backward ~ 3x forward
            import keras

            m.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
            m.fit(x[:batch * 2], y[:batch * 2].astype(np.float32), batch_size=batch, epochs=1,
                  verbose=0)
            t = time.perf_counter()
            m.fit(x, y.astype(np.float32), batch_size=batch, epochs=1, verbose=0)
            rates["plain fit"] = n / (time.perf_counter() - t)
            rates["package"] = _package_rate(x, y, base, batch, prec)
            for path, r in rates.items():
                g = r * flops / 1e9
                ratio = f"{rates['package'] / rates['plain fit']:.2f}" if path == "package" else ""
                print(f"| {name} ({size}px, base {base}, batch {batch}) | {prec} | {path} | "
                      f"{r:.2f} | {g:.0f} | {100 * g / peaks[prec]:.1f} | {ratio} |", flush=True)


def bench_plans(precision="fp32"):
    """Step time per plan: selective trainer (one step per trainable set), masked trainer
    (one step for all plans, every gradient computed) and Keras (apply_plan + fit), side by
    side in one process; trace time of the selective trainer's step per set."""
    import keras

    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.trainers import MaskedTrainer, SelectiveTrainer
    from keras_unet_ft.model import build_unet
    from keras_unet_ft.plans import Plan
    from keras_unet_ft.trainable import apply_plan
    from keras_unet_ft.runtime import make_dataset

    name = os.environ.get("BENCH_PLANS_CONFIG", "quick")
    size, base, batch = CONFIGS[name]
    plans = ["all", "contracting", "expanding", "shallow_to_deep:1", "shallow_to_deep:3",
             "deep_to_shallow:1", "deep_to_shallow:3", "only_block:5"]
    n = batch * int(os.environ.get("BENCH_PLANS_STEPS", "30"))
    x = np.random.default_rng(0).random((n, size, size, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.uint8)
    print(f"\n## Step time per plan ({name} config: {size} px, base {base}, batch {batch}; "
          f"{precision}; best of {os.environ.get('BENCH_PLANS_REPS', '3')} epochs of "
          f"{n // batch} steps, trainers interleaved, after a warm-up)\n")
    print("| plan | selective ms/step | ratio to all | trace s | masked ms/step | ratio | "
          "Keras fit ms/step | ratio | Keras trace+compile s | selective / Keras |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    reps = int(os.environ.get("BENCH_PLANS_REPS", "3"))
    res = {p: {} for p in plans}
    _session(precision)
    trainers = {}
    for kind, cls in (("selective", SelectiveTrainer), ("masked", MaskedTrainer)):
        m = build_unet((size, size, 1), base)
        trainers[kind] = (cls(m, 1e-4), BlockMap(m), m.get_weights())
    ds_small = make_dataset(x[:batch * 2], y[:batch * 2], batch)
    ds = make_dataset(x, y, batch)

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    for p in plans:
        km = build_unet((size, size, 1), base)
        apply_plan(km, p, optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
        res[p]["keras_trace"] = timed(lambda: km.fit(ds_small, epochs=1, verbose=0,
                                                     shuffle=False))
        for kind, (tr, bm, w0) in trainers.items():
            tr.reset(w0, Plan.parse(p).trainable_layers(bm))
            res[p][kind + "_trace"] = timed(lambda: tr.fit(ds_small, 1))  # traces (once)
        best = {k: float("inf") for k in ("selective", "masked", "keras")}
        for _ in range(reps):  # interleaved, min of reps: this VM's speed drifts
            for kind, (tr, bm, w0) in trainers.items():
                tr.reset(w0, Plan.parse(p).trainable_layers(bm))
                best[kind] = min(best[kind], timed(lambda: tr.fit(ds, 1)))
            best["keras"] = min(best["keras"], timed(
                lambda: km.fit(ds, epochs=1, verbose=0, shuffle=False)))
        for k, v in best.items():
            res[p][k] = 1000 * v / (n // batch)
    a = res["all"]
    for p in plans:
        r = res[p]
        print(f"| {p} | {r['selective']:.1f} | {r['selective'] / a['selective']:.2f} | "
              f"{r['selective_trace']:.1f} | {r['masked']:.1f} | {r['masked'] / a['masked']:.2f} | "
              f"{r['keras']:.1f} | {r['keras'] / a['keras']:.2f} | {r['keras_trace']:.1f} | "
              f"{r['selective'] / r['keras']:.2f} |", flush=True)


def bench_grid():
    """The fine-tuning grid end to end with the selective and the masked trainer, same
    study (quick profile on sim_bus by default; BENCH_GRID_SET for other --set items)."""
    import subprocess
    import tempfile

    extra = os.environ.get("BENCH_GRID_SET", "data.targets=sim_bus").split()
    jobs = os.environ.get("BENCH_GRID_JOBS", "auto")
    root = tempfile.mkdtemp(prefix="bench_grid_")
    run_all = os.path.join(os.path.dirname(__file__), "..", "experiments", "run_all.py")
    print(f"\n## Fine-tuning grid end to end (quick profile, {' '.join(extra)}, --jobs {jobs})\n")
    print("| trainer | wall s (pretraining reused) | runs |")
    print("|---|---|---|")
    base = [sys.executable, run_all, "--profile", "quick", "--jobs", jobs]
    for e in extra:
        base += ["--set", e]
    env = {**os.environ, "UNET_FT_NO_PROGRESS": "1"}
    pre = [sys.executable, "-m", "keras_unet_ft.cli", "pretrain", "--profile", "quick",
           "--out", os.path.join(root, "pre")]
    for e in extra:
        pre += ["--set", e]
    subprocess.run(pre, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # one pretraining, reused: time the grid alone
    for trainer in ("masked", "selective"):
        out = os.path.join(root, trainer)
        os.makedirs(out, exist_ok=True)
        subprocess.run(["cp", "-r", os.path.join(root, "pre", "pretrained"), out], check=True)
        t = time.perf_counter()
        subprocess.run(base + ["--out", out, "--set", f"study.trainer={trainer}"], env=env,
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        runs = sum(1 for _ in open(os.path.join(out, "results.csv"))) - 1
        print(f"| {trainer} | {wall:.0f} | {runs} rows |", flush=True)


def bench_pipeline():
    from keras_unet_ft.data.augment import augment_to
    from keras_unet_ft.runtime import make_dataset

    print("\n## Input pipeline alone\n")
    print("| stage | size | images/s |")
    print("|---|---|---|")
    for size in (64, 256):
        x = np.random.default_rng(0).random((60, size, size, 1), dtype=np.float32)
        m = (x > 0.5).astype(np.uint8)
        t = time.perf_counter()
        augment_to(x, m, total=300, seed=0)
        print(f"| paired augmentation (skimage affine warp) | {size} | "
              f"{240 / (time.perf_counter() - t):.0f} |")
        xa = np.repeat(x, 10, axis=0)
        ma = np.repeat(m, 10, axis=0)
        ds = make_dataset(xa, ma, 8, shuffle=True)
        for _ in ds:
            pass
        t = time.perf_counter()
        for _ in range(3):
            for _ in ds:
                pass
        print(f"| tf.data shuffle + batch + prefetch | {size} | "
              f"{3 * len(xa) / (time.perf_counter() - t):.0f} |", flush=True)


def bench_data():
    from keras_unet_ft.data import load_dataset

    print("\n## Built-in data generation\n")
    print("| generator | size | images | seconds | images/s |")
    print("|---|---|---|---|---|")
    only = os.environ.get("BENCH_DATA")   # e.g. "sim_bus,sim_bus_simple"
    for name, size, n in (("sim_bus", 64, 100), ("sim_bus", 256, 600),
                          ("sim_bus_simple", 256, 600), ("sim_lus", 256, 100),
                          ("synth_salient", 64, 100), ("synth_salient", 256, 100),
                          ("synth_cxr", 64, 100), ("synth_cxr", 256, 100)):
        if not only or name in only.split(","):
            t = time.perf_counter()
            load_dataset(name, n=n, size=size, cache=False, progress=False)
            s = time.perf_counter() - t
            print(f"| {name} | {size} | {n} | {s:.1f} | {n / s:.1f} |", flush=True)


def _torch_rate(size, base, batch, steps, precision):
    """images/s of a plain PyTorch training loop of the same U-Net (benchmarks/torch_unet.py)."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_unet import TorchUNet

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = TorchUNet(base).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.rand(batch * steps, 1, size, size)
    y = (x > 0.5).float()

    def epoch(n):
        for i in range(n):
            xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model(xb).float(), yb)
            loss.backward()
            opt.step()

    epoch(2)
    t = time.perf_counter()
    epoch(steps)
    return batch * steps / (time.perf_counter() - t)


TORCH_CONFIGS = {**CONFIGS, "issue-small": (128, 16, 8)}
TORCH_STEPS = {"quick": 150, "paper": 10, "issue-small": 30}


def bench_torch(precisions=tuple(os.environ.get("BENCH_PRECISIONS", "fp32,bf16").split(","))):
    """The package's training path vs the same U-Net in PyTorch, same run, same data size."""
    try:
        import torch
    except ImportError:
        print("\n## PyTorch peer: torch is not installed (pip install torch==2.13.0), skipped")
        return
    from keras_unet_ft.runtime import configure_cpu_threads

    print(f"\n## The package vs the same U-Net in PyTorch {torch.__version__} (CPU)\n")
    print("| config | precision | package images/s | PyTorch images/s | ratio package/PyTorch |")
    print("|---|---|---|---|---|")
    chosen = os.environ.get("BENCH_CONFIGS", ",".join(TORCH_CONFIGS)).split(",")
    for name, (size, base, batch) in TORCH_CONFIGS.items():
        if name not in chosen:
            continue
        steps = TORCH_STEPS[name]
        n = batch * steps
        # as the study does; takes effect only before TensorFlow starts (run the paper
        # row alone: BENCH_CONFIGS=paper)
        configure_cpu_threads(base)
        x = np.random.default_rng(0).random((n, size, size, 1), dtype=np.float32)
        y = (x > 0.5).astype(np.uint8)
        for prec in precisions:
            ours = _package_rate(x, y, base, batch, prec)
            theirs = _torch_rate(size, base, batch, steps, prec)
            print(f"| {name} ({size}px, base {base}, batch {batch}) | {prec} | {ours:.2f} | "
                  f"{theirs:.2f} | {ours / theirs:.2f} |", flush=True)


def bench_encoders(precision=os.environ.get("BENCH_PRECISIONS", "auto").split(",")[0]):
    """Seconds per epoch of each network at the quick size, one after the other in one run."""
    from keras_unet_ft.config import ENCODER_NAMES, load_config
    from keras_unet_ft.plans import Plan
    from keras_unet_ft.runtime import configure_cpu_threads, make_dataset, resolve_precision
    from keras_unet_ft.trainers import SelectiveTrainer, clear_shared
    from keras_unet_ft.model import build_from_config

    size, base, batch = CONFIGS["quick"]
    n = 200   # the quick profile's augmented training images per fold
    resolved = resolve_precision(precision)
    configure_cpu_threads(base)
    rng = np.random.default_rng(0)
    x = rng.random((n, size, size, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    kinds = ["unet", "xunet", "vunet"] + [f"encoder:{e}" for e in ENCODER_NAMES]
    print(f"\nencoders: seconds per fine-tuning epoch, all layers, {n} images of {size} px, "
          f"batch {batch}, precision {resolved} (median of 3 epochs after a traced one)")
    print(f"{'network':<24} {'params':>12} {'s / epoch':>10} {'x U-Net':>8}")
    ref = None
    for kind in kinds:
        cfg = load_config("quick", {"model.kind": kind, "model.encoder_weights": "none"})
        clear_shared()
        _session(resolved)
        model = build_from_config(cfg.model)
        tr = SelectiveTrainer(model, 3e-4, "bce", resolved)
        plan = Plan.parse("all")
        tr.select(plan.bare.trainable_layers(tr.bm), plan, tr.bm)
        ds = make_dataset(x, y, batch, shuffle=True, seed=0)
        tr.fit(make_dataset(x[:batch * 2], y[:batch * 2], batch), 1)   # trace
        times = []
        for _ in range(3):
            t = time.perf_counter()
            tr.fit(ds, 1)
            times.append(time.perf_counter() - t)
        sec = float(np.median(times))
        ref = ref or sec
        print(f"{kind:<24} {model.count_params():>12,} {sec:>10.2f} {sec / ref:>8.1f}")


SECTIONS = {"peak": lambda: print(f"\npeak matmul GFLOP/s: fp32 {peak('float32'):.0f}, "
                                   f"bf16 {peak('bfloat16'):.0f}"),
            "train": bench_train, "plans": bench_plans, "grid": bench_grid,
            "pipeline": bench_pipeline,
            "data": bench_data, "torch": bench_torch, "encoders": bench_encoders}


if __name__ == "__main__":
    import platform

    chosen = sys.argv[1:] or list(SECTIONS)
    bad = [c for c in chosen if c not in SECTIONS]
    if bad:
        sys.exit(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    flags = ""
    try:
        flags = " ".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f")
                         if f in open("/proc/cpuinfo").read())
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    print(f"# keras-unet-ft benchmarks — {time.strftime('%Y-%m-%d')}, {cpu}, "
          f"{os.cpu_count()} CPUs, flags: {flags or 'n/a'}")
    for c in chosen:
        SECTIONS[c]()
