"""Your own network (``model.kind=file:PATH``): a Keras 3 ``.keras`` U-Net-like model.

The file is the pretrained net of a study: any functional (or ``Sequential``) Keras 3
model saved with ``model.save("net.keras")`` that has

* one image input ``(H, W, C)`` with ``C`` = 1 (grey) or 3 (the grey image is tiled to
  3 channels by a ``Concatenate`` layer named as your input layer, inside the model);
* one output ``(H, W, 1)`` of the input's size whose last layer is a sigmoid (a layer
  with ``activation="sigmoid"`` or a final ``Activation("sigmoid")``);
* a change of resolution somewhere (a U-Net goes down and back up);
* layers Keras can load (a custom layer must be registered with
  ``keras.saving.register_keras_serializable`` and imported before the run).

Anything else is refused with one sentence saying what the file has and what is
expected. The network is rebuilt from its config (its layers stay flat, layers of the
returned model, never a nested model), so that:

* its input is always ``(size, size, 1)``: a fully convolutional net saved at another
  size is rebuilt at ``size`` with its weights; a net whose size is fixed (``Flatten``
  + ``Dense``, a ``Reshape`` to a fixed size) is refused when ``size`` differs;
* its layers follow the current global Keras dtype policy (the package picks
  ``mixed_bfloat16`` on CPUs with bf16), except the output layer, which stays float32.

The parsed model (config and weights) is cached per ``(path, modification time)`` and
the rebuilt config per ``size`` within the process, so building the same network
again is cheap.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import random
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np

from .exitcodes import UserError

EXPECTED = ("expected a Keras 3 model saved with model.save('net.keras'): one image input "
            "(H, W, 1 or 3) and one sigmoid output (H, W, 1)")
_LOADED: Dict[tuple, Tuple[dict, list]] = {}
_REBUILT: Dict[tuple, dict] = {}


def file_digest(path) -> str:
    """The SHA-256 of a file (hex), for fingerprints and reports.

    Examples:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> _ = p.write_bytes(b"abc")
        >>> file_digest(p)[:12]
        'ba7816bf8f01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0].rstrip(".") if text else type(e).__name__


def _check_file(path) -> pathlib.Path:
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise UserError(f"model file {p} does not exist; {EXPECTED}")
    if not p.is_file():
        raise UserError(f"model file {p} is not a file; {EXPECTED}")
    if not zipfile.is_zipfile(p):
        raise UserError(f"model file {p} is not a Keras model (not a .keras archive); "
                        f"{EXPECTED}")
    with zipfile.ZipFile(p) as z:
        if "config.json" not in z.namelist():
            raise UserError(f"model file {p} is not a Keras model (no config.json in the "
                            f"archive); {EXPECTED}")
    return p


def _check_layers_known(path: pathlib.Path, keras) -> None:
    """A layer of ``config.json`` that is neither Keras' own nor registered: one sentence."""
    config = read_config(path).get("config", {})
    for entry in config.get("layers", []) if isinstance(config, dict) else []:
        module = str(entry.get("module") or "")
        registered = entry.get("registered_name")
        if module.startswith("keras") and not registered:
            continue
        if registered and keras.saving.get_registered_object(registered) is not None:
            continue
        name = entry.get("config", {}).get("name", "?")
        raise UserError(
            f"model file {path} uses layer {name!r} of class {entry.get('class_name')!r} "
            f"({module or 'no module'}) that Keras cannot load; register it with "
            "keras.saving.register_keras_serializable and import it before the run, or use "
            "built-in layers")


def _load(path: pathlib.Path) -> Tuple[dict, list]:
    """``(functional config, weights)`` of the file, cached per path and mtime."""
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key in _LOADED:
        return _LOADED[key]
    import keras

    _check_layers_known(path, keras)
    # loading builds the layers, whose initialisers draw seeds from Python's random state:
    # put it back, so that a seeded build after it is the same whether the file was read
    # in this process before or not (the scratch baseline's weights)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001 - anything Keras cannot load is a bad input
        why = _first_line(e)
        raise UserError(f"model file {path} cannot be loaded by Keras ({why}); "
                        f"{EXPECTED}") from None
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "_run_through_graph") or not model.inputs:
        raise UserError(f"model file {path} holds a subclassed model ({type(model).__name__})"
                        "; expected a functional model keras.Model(inputs, outputs) or a "
                        "Sequential one")
    if len(model.inputs) != 1:
        raise UserError(f"model file {path} has {len(model.inputs)} inputs; expected one image "
                        "input (H, W, 1 or 3)")
    if len(model.outputs) != 1:
        raise UserError(f"model file {path} has {len(model.outputs)} outputs; expected one "
                        "sigmoid output (H, W, 1)")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise UserError(f"model file {path} takes input {shape[1:]}; expected one image input "
                        "(H, W, 1) or (H, W, 3)")
    out = tuple(model.outputs[0].shape)
    layer = model.outputs[0]._keras_history.operation
    activation = layer.get_config().get("activation") if hasattr(layer, "get_config") else None
    if len(out) != 4 or out[-1] != 1 or activation != "sigmoid":
        raise UserError(
            f"model file {path} ends in layer {layer.name!r} with output {out[1:]} and "
            f"activation {activation!r}; expected one channel (H, W, 1) with a sigmoid (a "
            "layer with activation='sigmoid' or a final Activation('sigmoid'))")
    config = model.get_config()
    weights = [w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()]
    _LOADED[key] = (config, weights)
    return config, weights


def _rebuilt_config(path: pathlib.Path, size: Optional[int]) -> Tuple[dict, list, int]:
    """The config of the net at ``(size, size, 1)``, cached per path, mtime and size."""
    config, weights = _load(path)
    inp = next(l for l in config["layers"] if l["class_name"] == "InputLayer")
    _, h, w, c = inp["config"]["batch_shape"]
    if size is None:
        if h is None or w is None or h != w:
            raise UserError(f"model file {path} takes input {h}x{w}; give model.size (the "
                            "input height and width of the study)")
        size = int(h)
    key = (str(path.resolve()), path.stat().st_mtime_ns, int(size))
    if key in _REBUILT:
        return _REBUILT[key], weights, int(size)
    cfg = copy.deepcopy(config)
    out_name = (cfg["output_layers"][0] if isinstance(cfg["output_layers"][0], str)
                else cfg["output_layers"][0][0])
    layers = []
    for entry in cfg["layers"]:
        entry.pop("build_config", None)   # layers are built when the graph is rebuilt
        if entry["class_name"] == "InputLayer":
            continue
        if entry["name"] == out_name:
            entry["config"]["dtype"] = "float32"
        else:
            entry["config"].pop("dtype", None)   # the global dtype policy
        layers.append(entry)
    name = inp["name"]
    grey = copy.deepcopy(inp)
    grey["config"]["batch_shape"] = [None, int(size), int(size), 1]
    if c == 3:   # a Concatenate named as the input: every consumer reads it unchanged
        grey["name"] = grey["config"]["name"] = f"{name}_grey"
        ref = {"class_name": "__keras_tensor__",
               "config": {"shape": [None, int(size), int(size), 1], "dtype": "float32",
                          "keras_history": [f"{name}_grey", 0, 0]}}
        tile = {"module": "keras.layers", "class_name": "Concatenate", "registered_name": None,
                "name": name, "config": {"name": name, "trainable": True, "axis": -1},
                "inbound_nodes": [{"args": [[ref, ref, ref]], "kwargs": {}}]}
        layers.insert(0, tile)
        _replace_input(cfg, name, f"{name}_grey")
    cfg["layers"] = [grey] + layers
    _REBUILT[key] = cfg
    return cfg, weights, int(size)


def _replace_input(cfg: dict, old: str, new: str) -> None:
    spec = cfg["input_layers"]
    if spec and isinstance(spec[0], str):
        if spec[0] == old:
            cfg["input_layers"] = [new] + list(spec[1:])
    else:
        cfg["input_layers"] = [[new] + list(s[1:]) if s[0] == old else s for s in spec]


def load_user_model(path, size: Optional[int] = None, weights: bool = True):
    """Your network, rebuilt at ``(size, size, 1)`` with the file's weights.

    Args:
        path: a ``.keras`` file (the rules: the module docstring).
        size: the input height and width; None keeps the file's (square) size.
        weights: the file's weights (the pretrained net); False: the layers' own (seeded)
            initial weights, the architecture alone.

    Returns:
        A functional ``keras.Model`` with input ``(size, size, 1)`` and a float32 sigmoid
        output ``(size, size, 1)``, holding the file's weights (the pretrained net).

    Examples:
        >>> import keras, pathlib, tempfile
        >>> x = keras.Input((32, 32, 1))
        >>> d = keras.layers.MaxPooling2D()(keras.layers.Conv2D(4, 3, padding="same")(x))
        >>> u = keras.layers.UpSampling2D()(d)
        >>> y = keras.layers.Conv2D(1, 1, activation="sigmoid")(u)
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "net.keras"
        >>> keras.Model(x, y).save(p)
        >>> load_user_model(p, size=64).output.shape
        (None, 64, 64, 1)
    """
    import keras

    p = _check_file(path)
    cfg, saved, size = _rebuilt_config(p, size)
    try:
        model = keras.Model.from_config(copy.deepcopy(cfg))   # Keras consumes the dict
        if weights:
            model.set_weights(saved)
    except Exception as e:  # noqa: BLE001 - a fixed-size layer: Flatten + Dense, Reshape
        config, _ = _load(p)
        inp = next(l for l in config["layers"] if l["class_name"] == "InputLayer")
        h, w = inp["config"]["batch_shape"][1:3]
        raise UserError(f"model file {p}: the model's input size is fixed at {h}x{w} and it "
                        f"cannot be rebuilt at {size}x{size} ({_first_line(e)}); save it at "
                        f"{size}x{size} or fully convolutional") from None
    if isinstance(model.input, (list, tuple)) or isinstance(model.output, (list, tuple)):
        # saved as Model([x], [y]): one tensor in, one out (a SavedModel's signature, predict)
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    out = tuple(model.outputs[0].shape)
    if out[1:] != (size, size, 1):
        raise UserError(f"model file {p}: its output at input {size}x{size} is {out[1:]}; "
                        "expected the size of its input (H, W, 1), as a U-Net's")
    heights = {int(t.shape[1]) for l in model.layers for n in l._inbound_nodes[:1]
               for t in n.outputs if len(t.shape) == 4 and t.shape[1] is not None}
    if heights <= {size}:
        raise UserError(f"model file {p}: no layer changes the spatial resolution; expected a "
                        "U-Net-like network that down-samples and up-samples back")
    return model


def user_model_weights(path, size: Optional[int] = None) -> List:
    """The file's weights as :func:`load_user_model` ``(path, size)`` holds them (the
    "pretrained" weights: numpy arrays, in the model's ``get_weights()`` order)."""
    p = _check_file(path)
    _, weights, _ = _rebuilt_config(p, size)
    return [w.copy() for w in weights]


def clear_cache() -> None:
    """Forget the parsed files (tests; a file rewritten within the same mtime tick)."""
    _LOADED.clear()
    _REBUILT.clear()


def describe_file(path) -> Dict[str, str]:
    """``{"path", "name", "sha256"}`` of a model file (no Keras)."""
    p = pathlib.Path(path).expanduser()
    return {"path": str(p), "name": os.path.basename(str(p)), "sha256": file_digest(p)}


def read_config(path) -> dict:
    """The ``config.json`` of a ``.keras`` file, parsed without Keras."""
    with zipfile.ZipFile(_check_file(path)) as z:
        return json.loads(z.read("config.json"))
