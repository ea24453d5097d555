"""Dataset specs: NAME, NAME:ROOT, ?KEY=VALUE options; errors name the spec and the fix."""

import pytest

import dataclasses

from keras_unet_ft.data.registry import (MODALITIES, REGISTRY, DatasetInfo, load_dataset,
                                         loader_options, modality, resolve_options, split_spec)


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


def test_every_dataset_record_names_its_modality():
    """The modality is a field of the record (no second table to forget a loader in)."""
    for name, info in REGISTRY.items():
        assert info.modality in MODALITIES, name
        assert modality(name if info.kind == "builtin" else f"{name}:/d") == info.modality
    fields = {f.name: f for f in dataclasses.fields(DatasetInfo)}
    assert fields["modality"].default is dataclasses.MISSING   # required
    with pytest.raises(ValueError, match="modality 'mri'; expected one of ultrasound"):
        DatasetInfo("scans", "real", "mri", "d", "layout", "folder")


@pytest.mark.parametrize("name, spec_options, given, expected", [
    ("sim_bus", {"n": "12", "seed": " 3 "}, {}, {"n": 12, "seed": 3}),              # int
    ("sim_bus", {"malignant_fraction": "0.25"}, {}, {"malignant_fraction": 0.25}),  # float
    ("sim_bus", {}, {"malignant_fraction": 1}, {"malignant_fraction": 1.0}),
    ("busi", {"include_normal": "no", "skip_unpaired": "On"}, {},                   # bool words
     {"include_normal": False, "skip_unpaired": True}),
    ("busi", {"strict": "1"}, {"include_normal": False}, {"include_normal": False, "strict": True}),
    ("folder", {"mask_suffix": "_seg", "images_dir": "img"}, {},                     # strings
     {"mask_suffix": "_seg", "images_dir": "img"}),
    ("sim_bus", {"shift": "none"}, {}, {"shift": "none"}),     # a str option keeps the word
    ("xpie", {"limit": "50", "n": "null"}, {}, {"limit": 50, "n": None}),  # None where allowed
    ("folder", {"classes": "red,green"}, {}, {"classes": "red,green"}),
    ("busbra", {}, {"classes": ("red",), "n": None}, {"classes": ("red",), "n": None}),
    ("busi", {"n": "4"}, {"n": 4}, {"n": 4}),                  # the same value twice
])
def test_options_are_converted_to_the_loaders_types(name, spec_options, given, expected):
    assert resolve_options(name, spec_options, given) == expected


@pytest.mark.parametrize("name, options, message", [
    ("busi", {"include_normal": "maybe"}, "busi: option include_normal='maybe': expected true "
                                          "or false"),
    ("sim_bus", {"n": "x"}, "sim_bus: option n='x': expected a whole number"),
    ("sim_bus", {"n": "1.5"}, "option n='1.5': expected a whole number"),
    ("sim_bus", {"n": True}, "option n=True: expected a whole number"),
    ("sim_bus", {"malignant_fraction": "lots"}, "option malignant_fraction='lots': expected a "
                                                "number"),
    ("xpie", {"limit": "all"}, "xpie: option limit='all': expected a whole number"),
    ("sim_bus", {"n": "0"}, "option n=0: expected a positive number of images"),
    ("synth_cxr", {"seed": "none"}, "option seed='none': expected a whole number"),
    ("folder", {"mask_suffix": 3}, "option mask_suffix=3: expected text"),
    ("sim_bus", {"n": "x", "seed": "y"}, "option n='x': expected a whole number; "
                                         "option seed='y': expected a whole number"),
    ("folder", {"mask_sufix": "_m"}, "folder: unknown option(s) ['mask_sufix']; folder takes: "
                                     "mask_suffix=''"),
    ("folder", {"mask_sufix": "_m"}, "Did you mean mask_suffix?"),
    ("sim_bus", {"sede": "1", "colour": "red"}, "unknown option(s) ['colour', 'sede']; "),
    ("sim_bus", {"sede": "1", "colour": "red"}, "Did you mean seed for sede?"),
    ("sim_bus", {"progress": "false"}, "unknown option(s) ['progress']"),
])
def test_bad_options_name_the_option_its_value_and_what_is_expected(name, options, message):
    spec = {k: v for k, v in options.items() if isinstance(v, str)}
    given = {k: v for k, v in options.items() if not isinstance(v, str)}
    with pytest.raises(ValueError) as e:
        resolve_options(name, spec, given)
    assert message in str(e.value)


def test_an_option_given_twice_differently_is_an_error():
    with pytest.raises(ValueError, match="option seed is '3' in the spec and 4 elsewhere"):
        resolve_options("sim_bus", {"seed": "3"}, {"seed": 4})
