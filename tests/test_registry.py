"""Dataset specs: NAME, NAME:ROOT, ?KEY=VALUE options; errors name the spec and the fix."""

import pytest

from keras_unet_ft.data.registry import (REGISTRY, load_dataset, loader_options, modality,
                                         split_spec)


@pytest.mark.parametrize("spec, expected", [
    ("sim_bus", ("sim_bus", None, {})),
    ("busi:/data/BUSI", ("busi", "/data/BUSI", {})),
    ("busi:/data/BUSI?include_normal=false&n=163",
     ("busi", "/data/BUSI", {"include_normal": "false", "n": "163"})),
    ("folder:/d/scans?modality=ultrasound&name=mine",
     ("folder", "/d/scans", {"modality": "ultrasound", "name": "mine"})),
])
def test_specs_split_into_name_root_and_options(spec, expected):
    assert split_spec(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("", "a dataset is given as NAME"),
    ("sim_bsu", "did you mean sim_bus"),
    ("/data/scans", "folder:"),
    ("busi:", "has an empty folder after ':'"),
    ("busi:/d?n", "bad option 'n'"),
    ("busi:/d?n=1&n=2", "option 'n' given twice"),
    ("folder:/d?modality=mri", "modality='mri'; expected one of ultrasound, xray, other"),
    ("folder:/d?name=../up", "name='../up'; expected letters"),
])
def test_bad_specs_are_errors_naming_what_to_give(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        split_spec(spec)


@pytest.mark.parametrize("spec, expected", [
    ("sim_bus", "ultrasound"), ("synth_cxr", "xray"), ("folder:/d", "other"),
    ("folder:/d?modality=xray", "xray"), ("busi:/d", "ultrasound"),
])
def test_modality_of_a_spec(spec, expected):
    assert modality(spec) == expected


def test_every_dataset_lists_its_layout_and_options():
    for name, info in REGISTRY.items():
        assert info.layout and info.description, name
        if name != "sim_bus_must":   # its optional extra may be missing
            assert isinstance(loader_options(name), dict)


def test_built_in_data_takes_no_folder_and_unknown_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="built-in data; it takes no folder"):
        load_dataset("sim_bus:/data/x", size=32, cache=False)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
        load_dataset("sim_bus?colour=red", size=32, cache=False)
    ds = load_dataset("sim_bus?n=4", size=32, cache=False)
    assert ds.images.shape == (4, 32, 32, 1) and ds.masks.shape == ds.images.shape
