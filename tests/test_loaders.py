"""Every loader on a tiny fixture written in the real format, plus the bad inputs."""

import logging
import re

import numpy as np
import pytest
from PIL import Image

from keras_unet_ft.cli import main
from keras_unet_ft.data import load_dataset
from keras_unet_ft.data.loaders._common import LayoutError

SIZE = 32


def _img(h=40, w=48, seed=0, rgb=False):
    a = (np.random.default_rng(seed).random((h, w)) * 255).astype(np.uint8)
    return np.stack([a] * 3, -1) if rgb else a


def _mask(h=40, w=48, box=(5, 20, 10, 30), value=255):
    m = np.zeros((h, w), np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = value
    return m


def _save(path, a, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format=fmt)


def _load(spec, **kw):
    return load_dataset(spec, size=SIZE, cache=False, progress=False, **kw)


def test_xpie(tmp_path):
    for i in range(3):
        _save(tmp_path / "Images" / f"{i}.jpg", _img(seed=i, rgb=True))
        _save(tmp_path / "Grounds" / f"{i}.png", _mask())
    ds = _load(f"xpie:{tmp_path}")
    assert ds.images.shape == (3, SIZE, SIZE, 1) and ds.images.dtype == np.float32
    assert ds.ids == ["0", "1", "2"]
    assert set(np.unique(ds.masks)) == {0, 1}
    assert 0 <= ds.images.min() and ds.images.max() <= 1


def test_udiat_b_with_and_without_class_list(tmp_path):
    for i in (1, 2, 3):
        _save(tmp_path / "original" / f"{i:06d}.png", _img(seed=i))
        _save(tmp_path / "GT" / f"{i:06d}.png", _mask())
    ds = _load("udiat_b", root=tmp_path)
    assert "class" not in ds.meta and len(ds) == 3
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.append(["Image", "Type"])
    for i, t in ((1, "Benign"), (2, "Malignant"), (3, "Benign")):
        wb.active.append([f"{i:06d}", t])
    wb.save(tmp_path / "DatasetB.xlsx")
    ds = _load("udiat_b", root=tmp_path)
    assert ds.meta["class"] == ["benign", "malignant", "benign"]


def test_busi_unites_extra_masks_and_can_leave_out_normal(tmp_path):
    b = tmp_path / "Dataset_BUSI_with_GT"
    _save(b / "benign" / "benign (1).png", _img(rgb=True))
    _save(b / "benign" / "benign (1)_mask.png", _mask(box=(0, 5, 0, 5)))
    _save(b / "benign" / "benign (1)_mask_1.png", _mask(box=(30, 40, 30, 40)))
    _save(b / "malignant" / "malignant (1).png", _img(seed=2, rgb=True))
    _save(b / "malignant" / "malignant (1)_mask.png", _mask())
    _save(b / "normal" / "normal (1).png", _img(seed=3, rgb=True))
    _save(b / "normal" / "normal (1)_mask.png", _mask(value=0))
    ds = load_dataset("busi", root=tmp_path, size=(40, 48), cache=False, progress=False)
    assert ds.ids == ["benign (1)", "malignant (1)", "normal (1)"]
    assert ds.meta["class"] == ["benign", "malignant", "normal"]
    m = ds.masks[0, ..., 0]
    assert m[:5, :5].all() and m[30:, 30:40].all()  # union of _mask and _mask_1
    assert ds.masks[2].max() == 0                    # empty masks are kept
    ds = _load(f"busi:{tmp_path}", include_normal=False)
    assert len(ds) == 2


def test_jsrt_scr_raw_big_endian_and_gif_masks(tmp_path):
    raw = np.zeros((2048, 2048), np.uint16)
    raw[:, :1024] = 4095          # left half: dense film = dark after inversion
    for stem in ("JPCLN001", "JPCNN002"):
        raw.astype(">u2").tofile(tmp_path / f"{stem}.IMG")
        for side, box in (("left lung", (100, 900, 600, 950)), ("right lung", (100, 900, 80, 420))):
            _save(tmp_path / "scr" / "fold1" / "masks" / side / f"{stem}.gif",
                  _mask(1024, 1024, box), fmt="GIF")
    ds = _load(f"jsrt_scr:{tmp_path}")
    assert len(ds) == 2
    img = ds.images[0, ..., 0]
    assert img[:, :8].max() < 0.01 and img[:, -8:].min() > 0.99
    m = ds.masks[0, ..., 0]
    assert m[10, 5] == 1 and m[10, 26] == 1 and m[10, 16] == 0  # both lungs, not between


def test_jsrt_wrong_size_names_the_file(tmp_path):
    np.zeros(100, ">u2").tofile(tmp_path / "JPCLN001.IMG")
    for side in ("left lung", "right lung"):
        _save(tmp_path / "masks" / side / "JPCLN001.gif", _mask(1024, 1024), fmt="GIF")
    with pytest.raises(ValueError, match=r"JPCLN001.IMG has 200 bytes"):
        _load(f"jsrt_scr:{tmp_path}")


def test_montgomery(tmp_path):
    base = tmp_path / "MontgomerySet"
    _save(base / "CXR_png" / "MCUCXR_0001_0.png", _img())
    _save(base / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png", _mask(box=(5, 30, 30, 45)))
    _save(base / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", _mask(box=(5, 30, 2, 18)))
    ds = _load(f"montgomery:{tmp_path}")
    assert ds.ids == ["MCUCXR_0001_0"] and ds.masks.mean() > 0.2


def test_folder_with_suffix_and_16bit_and_graded_masks(tmp_path, caplog):
    a16 = (np.linspace(0, 65535, 40 * 48).reshape(40, 48)).astype(np.uint16)
    _save(tmp_path / "images" / "a.png", a16)
    graded = _mask(value=200)
    graded[0, 0] = 90
    _save(tmp_path / "masks" / "a_mask.png", graded)
    _save(tmp_path / "images" / "b.tif", _img(seed=1))
    _save(tmp_path / "masks" / "b_mask.png", _mask(value=1))  # 0/1 label image
    with caplog.at_level(logging.INFO, logger="keras_unet_ft.data"):
        ds = _load(f"folder:{tmp_path}", mask_suffix="_mask")
    assert ds.ids == ["a", "b"]
    assert ds.images[0].max() > 0.95 and ds.images[0].min() < 0.05  # 16 bit scaled by range
    assert ds.masks[1].sum() > 0  # 0/1 labels are foreground, not thresholded away
    assert "thresholded at half" in caplog.text


@pytest.mark.parametrize("spec, message", [
    ("xpie", "give its folder"),
    ("xpie:{tmp}/nowhere", "does not exist"),
    ("xpie:{tmp}", "no folder 'Images'"),
    ("busi:{tmp}", "no benign/ or malignant/ folder"),
    ("jsrt_scr:{tmp}", r"no \*.IMG"),
    ("mystery:{tmp}", "unknown dataset 'mystery'"),
])
def test_missing_root_or_wrong_layout(tmp_path, spec, message):
    with pytest.raises((LayoutError, FileNotFoundError, ValueError), match=message):
        _load(spec.format(tmp=tmp_path))


def test_unpaired_images_error_or_skip(tmp_path, caplog):
    for s in ("a", "b", "c"):
        _save(tmp_path / "images" / f"{s}.png", _img())
    _save(tmp_path / "masks" / "a.png", _mask())
    with pytest.raises(ValueError, match=r"2 image\(s\) without a mask, e.g. \['b.png', 'c.png'\]"):
        _load(f"folder:{tmp_path}")
    ds = _load(f"folder:{tmp_path}", skip_unpaired=True)
    assert ds.ids == ["a"]


def test_mask_of_another_size_names_the_file(tmp_path):
    _save(tmp_path / "images" / "a.png", _img())
    _save(tmp_path / "masks" / "a.png", _mask(20, 20, (1, 5, 1, 5)))
    with pytest.raises(ValueError, match=r"mask .*a.png is 20x20 but its image .*a.png is 48x40"):
        _load(f"folder:{tmp_path}")


def test_corrupt_file_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"not a png at all")
    _save(tmp_path / "masks" / "a.png", _mask())
    with pytest.raises(ValueError, match=r"cannot read image file .*images/a.png"):
        _load(f"folder:{tmp_path}")


def test_cache_is_keyed_by_content_and_a_corrupt_cache_is_rebuilt(tmp_path):
    import os

    root = tmp_path / "data"
    for i in range(2):
        _save(root / "images" / f"{i}.png", _img(seed=i))
        _save(root / "masks" / f"{i}.png", _mask())
    cache = tmp_path / "cache"

    def load():
        return load_dataset(f"folder:{root}", size=SIZE, cache_directory=cache, progress=False)

    ds1 = load()
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and stat_mode(files[0]) == 0o666 & ~umask()
    np.testing.assert_array_equal(load().images, ds1.images)       # a hit
    assert len(list(cache.glob("*.npz"))) == 1
    _save(root / "images" / "0.png", _img(seed=7))                  # an edit rebuilds
    os.utime(root / "images" / "0.png", ns=(1, 10**18))
    assert not np.array_equal(load().images[0], ds1.images[0])
    (root / "masks" / "1.png").unlink()                             # a deletion rebuilds
    with pytest.raises(ValueError, match="without a mask"):
        load()
    (root / "images" / "1.png").unlink()
    assert len(load()) == 1
    for f in cache.glob("*.npz"):
        f.write_bytes(b"garbage")
    assert len(load()) == 1                                         # corrupt: rebuilt


def stat_mode(path):
    import stat

    return stat.S_IMODE(path.stat().st_mode)


def umask():
    import os

    m = os.umask(0)
    os.umask(m)
    return m


def test_cli_data_show_on_a_folder(tmp_path):
    for i in range(4):
        _save(tmp_path / "images" / f"{i}.png", _img(seed=i))
        _save(tmp_path / "masks" / f"{i}.png", _mask())
    out = tmp_path / "grid.png"
    assert main(["data", "show", f"folder:{tmp_path}", "--size", "32", "--no-cache",
                 "-o", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert main(["data", "show", "folder:/definitely/not/here", "--no-cache"]) == 2


def _busi(tmp_path, n=3):
    b = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant", "normal"):
        for i in range(1, n + 1):
            _save(b / cls / f"{cls} ({i}).png", _img(seed=i, rgb=True))
            _save(b / cls / f"{cls} ({i})_mask.png", _mask(value=0 if cls == "normal" else 255))
    return tmp_path


@pytest.mark.parametrize("suffix, count, classes", [
    ("", 9, {"benign", "malignant", "normal"}),
    ("?include_normal=false", 6, {"benign", "malignant"}),
    ("?include_normal=false&n=4", 4, {"benign", "malignant"}),
    ("?n=3&seed=1", 3, None),
])
def test_loader_options_in_the_spec(tmp_path, suffix, count, classes):
    root = _busi(tmp_path)
    ds = _load(f"busi:{root}{suffix}")
    assert len(ds) == count
    if classes:
        assert set(ds.meta["class"]) == classes
    if "n=4" in suffix:  # a class-stratified subset: 2 benign + 2 malignant
        assert sorted(ds.meta["class"]) == ["benign", "benign", "malignant", "malignant"]


@pytest.mark.parametrize("suffix, message", [
    ("?include_normal=maybe", r"option include_normal='maybe': expected true or false"),
    ("?colour=red", r"unknown option\(s\) \['colour'\]; busi takes: include_normal=True"),
    ("?n=0", "expected a positive number of images"),
    ("?n", "bad option 'n'"),
    ("?n=2&n=3", "option 'n' given twice"),
])
def test_bad_loader_options_name_key_and_value(tmp_path, suffix, message):
    with pytest.raises(ValueError, match=message):
        _load(f"busi:{_busi(tmp_path)}{suffix}")


def test_folder_options_in_the_spec_and_builtin_count():
    import tempfile
    import pathlib

    tmp = pathlib.Path(tempfile.mkdtemp())
    for s in ("a", "b"):
        _save(tmp / "images" / f"{s}.png", _img())
    _save(tmp / "masks" / "a_mask.png", _mask())
    ds = _load(f"folder:{tmp}?mask_suffix=_mask&skip_unpaired=true")
    assert ds.ids == ["a"]
    assert len(_load("sim_bus?n=3")) == 3


def test_two_files_with_one_stem_are_an_error(tmp_path):
    _save(tmp_path / "images" / "a.png", _img())
    _save(tmp_path / "images" / "a.jpg", _img())
    _save(tmp_path / "masks" / "a.png", _mask())
    with pytest.raises(ValueError, match=r"a.jpg and .*a.png have the same name|a.png and "
                                         r".*a.jpg have the same name"):
        _load(f"folder:{tmp_path}")


def _busbra(tmp_path, n=6):
    root = tmp_path / "BUSBRA"
    ids = [f"bus_{i:04d}-{'l' if i % 2 else 'r'}" for i in range(1, n + 1)]
    for k, i in enumerate(ids):
        _save(root / "Images" / f"{i}.png", _img(seed=k))
        _save(root / "Masks" / f"{i.replace('bus_', 'mask_')}.png", _mask())
    (root / "bus_data.csv").write_text(
        "ID,Case,Pathology,BIRADS\n"
        + "".join(f"{i},{k // 2},{'malignant' if k % 3 == 0 else 'benign'},4\n"
                  for k, i in enumerate(ids)))
    (root / "5-fold-cv.csv").write_text("ID,kFold\n" + "".join(
        f"{i},{k % 2 + 1}\n" for k, i in enumerate(ids)))
    return tmp_path, ids


def test_busbra_layout_classes_and_official_folds(tmp_path):
    from conftest import tiny_config
    from keras_unet_ft.data.study_data import target_folds

    root, ids = _busbra(tmp_path)
    ds = _load(f"busbra:{root}")
    assert ds.ids == ids and ds.meta["class"][0] == "malignant" and "fold" not in ds.meta
    ds = _load(f"busbra:{root}?folds=official")
    assert ds.meta["fold"] == [0, 1, 0, 1, 0, 1]
    folds = target_folds(tiny_config(), ds, tmp_path / "splits.json")   # 2 folds
    assert folds[0]["test"] == ids[0::2] and folds[1]["test"] == ids[1::2]
    with pytest.raises(ValueError, match="comes with 2 official folds; set finetune.folds=2"):
        target_folds(tiny_config(**{"finetune.folds": "3"}), ds, tmp_path / "s3.json")


def _outline(shape, centre, radii, orientation=0.0, margin=40):
    """An ellipse outline drawn on a larger canvas and cut to ``shape`` (as HC18 draws a
    head that reaches past the border), and the true head region cut the same way."""
    from scipy import ndimage
    from skimage.draw import ellipse_perimeter

    big = np.zeros((shape[0] + 2 * margin, shape[1] + 2 * margin), bool)
    rr, cc = ellipse_perimeter(centre[0] + margin, centre[1] + margin, *radii,
                               orientation=orientation, shape=big.shape)
    big[rr, cc] = True
    cut = (slice(margin, margin + shape[0]), slice(margin, margin + shape[1]))
    return big[cut].astype(np.uint8) * 255, ndimage.binary_fill_holes(big)[cut]


def _hc18(tmp_path, outlines, shape=(40, 48)):
    folder = tmp_path / "training_set"
    for k, (stem, outline) in enumerate(outlines.items()):
        _save(folder / f"{stem}.png", _img(*shape, seed=k))
        _save(folder / f"{stem}_Annotation.png", outline)
    return tmp_path


def test_hc18_outlines_are_filled(tmp_path):
    outline, head = _outline((40, 48), (20, 24), (12, 16))
    _hc18(tmp_path, {stem: outline for stem in ("000_HC", "001_HC", "001_2HC")})
    ds = load_dataset(f"hc18:{tmp_path}", size=(40, 48), cache=False, progress=False)
    assert ds.ids == ["000_HC", "001_2HC", "001_HC"] and ds.warnings == []
    assert np.array_equal(ds.masks[0, ..., 0].astype(bool), head)


@pytest.mark.parametrize("centre, radii, orientation, gap", [
    ((20, 40), (12, 16), 0.0, False),     # cut by the right border
    ((2, 24), (14, 18), 0.4, False),      # cut by the top border, tilted
    ((34, 4), (12, 14), -0.3, False),     # cut by the bottom and left borders
    ((38, 2), (12, 14), 0.0, False),      # a corner only: the fitted ellipse is rough
    ((20, 24), (12, 16), 0.0, True),      # inside the image, a gap in the outline
])
def test_hc18_an_outline_cut_by_the_border_is_closed_by_an_ellipse(tmp_path, caplog, centre,
                                                                     radii, orientation, gap):
    whole, _ = _outline((40, 48), (20, 24), (12, 16))
    cut, head = _outline((40, 48), centre, radii, orientation)
    if gap:
        cut[14:20, 36:] = 0
    _hc18(tmp_path, {"000_HC": whole, "186_HC": cut, "187_HC": whole})
    with caplog.at_level(logging.WARNING, logger="keras_unet_ft.data"):
        ds = load_dataset(f"hc18:{tmp_path}", size=(40, 48), cache=False, progress=False)
    assert ds.ids == ["000_HC", "186_HC", "187_HC"]
    m = ds.masks[1, ..., 0].astype(bool)
    assert (m & head).sum() / (m | head).sum() > 0.9
    assert len(ds.warnings) == 1 and "hc18: 1 outline(s) not closed" in ds.warnings[0]
    assert "186_HC_Annotation.png" in ds.warnings[0] and "186_HC_Annotation.png" in caplog.text


def _scattered(shape=(40, 48)):
    a = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(3)
    a[rng.integers(0, shape[0], 15), rng.integers(0, shape[1], 15)] = 255
    return a


def _line(shape=(40, 48)):
    a = np.zeros(shape, np.uint8)
    a[5:30, 10] = 255
    return a


@pytest.mark.parametrize("broken", [_scattered, _line], ids=["scattered pixels", "open line"])
def test_hc18_an_outline_that_cannot_be_filled_is_left_out_or_refused(tmp_path, caplog, broken):
    whole, _ = _outline((40, 48), (20, 24), (12, 16))
    _hc18(tmp_path, {"000_HC": whole, "001_HC": whole, "002_HC": broken(), "003_HC": whole})
    with caplog.at_level(logging.WARNING, logger="keras_unet_ft.data"):
        ds = load_dataset(f"hc18:{tmp_path}", size=(40, 48), cache=False, progress=False)
    assert ds.ids == ["000_HC", "001_HC", "003_HC"]
    assert len(ds.warnings) == 1
    assert re.search(r"1 of 4 image/mask pair\(s\) cannot be read and are left out: the outline "
                     r"in .*002_HC_Annotation.png is not closed", ds.warnings[0])
    assert "002_HC_Annotation.png" in caplog.text
    with pytest.raises(ValueError, match=r"strict=true refuses .*002_HC_Annotation.png"):
        load_dataset(f"hc18:{tmp_path}?strict=true", size=(40, 48), cache=False,
                     progress=False)


@pytest.mark.parametrize("spec, message", [
    # a bare path: the fix is folder:PATH
    ("{tmp}", "a folder of your own is given as folder:{tmp}"),
    ("./scans", "a folder of your own is given as folder:./scans"),
    ("sim_buss", "did you mean sim_bus"),
    ("folder:{tmp}?modality=mri", "modality='mri'; expected one of ultrasound, xray, other"),
    ("folder:{tmp}?name=a b", "name='a b'; expected letters"),
])
def test_dataset_spec_errors_name_the_fix(tmp_path, spec, message):
    from keras_unet_ft.data.registry import split_spec

    with pytest.raises(ValueError, match=re.escape(message.format(tmp=tmp_path))):
        split_spec(spec.format(tmp=tmp_path))


def test_masks_with_a_suffix_are_named_with_the_option(tmp_path):
    for s in ("a", "b"):
        _save(tmp_path / "images" / f"{s}.png", _img())
        _save(tmp_path / "masks" / f"{s}_mask.png", _mask())
    with pytest.raises(ValueError, match=re.escape(f"folder:{tmp_path}?mask_suffix=_mask")):
        _load(f"folder:{tmp_path}")
    assert _load(f"folder:{tmp_path}?mask_suffix=_mask").ids == ["a", "b"]


@pytest.mark.parametrize("spec, slug, modality", [
    ("folder:/data/my_scans?modality=ultrasound", "my_scans", "ultrasound"),
    ("folder:/data/my_scans/", "my_scans", "other"),
    ("folder:/data/scans?name=mine&modality=xray", "mine", "xray"),
    ("busi:/data/BUSI?include_normal=false", None, "ultrasound"),
    ("sim_bus", "sim_bus", "ultrasound"),
])
def test_a_target_is_named_after_its_folder_and_takes_a_modality(spec, slug, modality):
    from keras_unet_ft.data.registry import modality as modality_of
    from keras_unet_ft.layout import target_slug

    if slug is None:
        assert re.fullmatch(r"busi-[0-9a-f]{6}", target_slug(spec))
    else:
        assert target_slug(spec) == slug
    assert modality_of(spec) == modality


def test_name_and_modality_are_no_loader_options(tmp_path):
    for s in ("a", "b"):
        _save(tmp_path / "images" / f"{s}.png", _img())
        _save(tmp_path / "masks" / f"{s}.png", _mask())
    ds = _load(f"folder:{tmp_path}?name=mine&modality=ultrasound")
    assert ds.ids == ["a", "b"]


def test_two_targets_of_one_name_are_an_error(tmp_path):
    from keras_unet_ft.data.study_data import check_targets

    with pytest.raises(ValueError, match="would both be named 'x'"):
        check_targets(["folder:/data/a/x", "folder:/data/b/x"])
    check_targets(["folder:/data/a/x", "folder:/data/b/x?name=x2"])
    with pytest.raises(ValueError, match="is the same data as"):
        check_targets(["folder:/data/a/x", "folder:/data/a/x?name=y"])


# ---------------------------------------------------------------------------
# a few odd files: the rest loads, the odd ones are named and left out (strict refuses)
def _odd(path, kind):
    """Spoil ``path`` (an image or mask file already written): ``corrupt``, ``empty`` or
    ``small`` (a smaller picture than its partner)."""
    if kind == "corrupt":
        path.write_bytes(b"\x89PNG not really")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        _save(path, _mask(20, 20, (1, 5, 1, 5)), fmt="GIF" if path.suffix == ".gif" else None)


def _folder_set(tmp, kind):
    for s in "abcd":
        _save(tmp / "images" / f"{s}.png", _img(seed=ord(s)))
        _save(tmp / "masks" / f"{s}.png", _mask())
    _odd(tmp / ("masks" if kind == "small" else "images") / "c.png", kind)
    return f"folder:{tmp}", list("abd"), "c.png"


def _xpie_set(tmp, kind):
    for s in "abcd":
        _save(tmp / "Images" / f"{s}.jpg", _img(seed=ord(s), rgb=True))
        _save(tmp / "Grounds" / f"{s}.png", _mask())
    _odd(tmp / "Grounds" / "b.png", kind)
    return f"xpie:{tmp}", list("acd"), "b.png"


def _udiat_set(tmp, kind):
    for i in (1, 2, 3, 4):
        _save(tmp / "original" / f"{i:06d}.png", _img(seed=i))
        _save(tmp / "GT" / f"{i:06d}.png", _mask())
    _odd(tmp / "GT" / "000004.png", kind)
    return f"udiat_b:{tmp}", ["000001", "000002", "000003"], "000004.png"


def _busi_set(tmp, kind):
    root = _busi(tmp, n=2)
    _odd(root / "Dataset_BUSI_with_GT" / "benign" / "benign (2).png", kind)
    ids = ["benign (1)", "malignant (1)", "malignant (2)", "normal (1)", "normal (2)"]
    return f"busi:{root}", ids, "benign (2).png"


def _busbra_set(tmp, kind):
    root, ids = _busbra(tmp, n=4)
    _odd(root / "BUSBRA" / "Masks" / "mask_0002-r.png", kind)
    return f"busbra:{root}", [i for i in ids if i != "bus_0002-r"], "mask_0002-r.png"


def _montgomery_set(tmp, kind):
    base = tmp / "MontgomerySet"
    for i in range(3):
        _save(base / "CXR_png" / f"MCUCXR_000{i}_0.png", _img(seed=i))
        for side in ("leftMask", "rightMask"):
            _save(base / "ManualMask" / side / f"MCUCXR_000{i}_0.png", _mask())
    _odd(base / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", kind)
    return f"montgomery:{tmp}", ["MCUCXR_0000_0", "MCUCXR_0002_0"], "MCUCXR_0001_0.png"


def _jsrt_set(tmp, kind):
    raw = np.zeros((2048, 2048), ">u2")
    for stem in ("JPCLN001", "JPCLN002", "JPCLN003"):
        raw.tofile(tmp / f"{stem}.IMG")
        for side in ("left lung", "right lung"):
            _save(tmp / "masks" / side / f"{stem}.gif", _mask(1024, 1024, (100, 900, 80, 420)),
                  fmt="GIF")
    _odd(tmp / "masks" / "left lung" / "JPCLN002.gif", kind)
    return f"jsrt_scr:{tmp}", ["JPCLN001", "JPCLN003"], "JPCLN002.gif"


@pytest.mark.parametrize("make, kind", [
    (_folder_set, "corrupt"), (_folder_set, "empty"), (_folder_set, "small"),
    (_xpie_set, "empty"), (_udiat_set, "small"), (_busi_set, "corrupt"),
    (_busbra_set, "small"), (_montgomery_set, "empty"), (_jsrt_set, "small"),
])
def test_a_few_odd_files_are_left_out_by_name_and_refused_with_strict(tmp_path, caplog, make,
                                                                       kind):
    spec, ids, odd = make(tmp_path, kind)
    with caplog.at_level(logging.WARNING, logger="keras_unet_ft.data"):
        ds = _load(spec)
    assert ds.ids == ids
    assert all(len(v) == len(ids) for v in ds.meta.values())    # class, size: still aligned
    assert len(ds.warnings) == 1 and odd in ds.warnings[0] and odd in caplog.text
    assert re.search(rf"1 of {len(ids) + 1} image/mask pair\(s\) cannot be read and are left "
                     "out", ds.warnings[0])
    with pytest.raises(ValueError, match=rf"strict=true refuses .*{re.escape(odd)}"):
        _load(spec + "?strict=true")


def test_more_than_half_the_files_odd_refuses_the_dataset(tmp_path):
    for s in "abc":
        _save(tmp_path / "images" / f"{s}.png", _img())
        _save(tmp_path / "masks" / f"{s}.png", _mask(20, 20) if s != "a" else _mask())
    with pytest.raises(ValueError, match=r"2 of 3 image/mask pair\(s\) cannot be read, more "
                                         r"than 50%, so the dataset is refused .*b.png is 20x20"):
        _load(f"folder:{tmp_path}")


def test_the_warnings_of_a_dataset_survive_its_cache(tmp_path):
    spec, ids, odd = _folder_set(tmp_path / "data", "empty")
    first = load_dataset(spec, size=SIZE, cache_directory=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").glob("*.npz"))
    hit = load_dataset(spec, size=SIZE, cache_directory=tmp_path / "cache", progress=False)
    assert hit.ids == ids and hit.warnings == first.warnings and odd in hit.warnings[0]
    assert hit.subset([0]).warnings == first.warnings


def _unlisted_busbra(tmp):
    root, ids = _busbra(tmp, n=4)
    csv = root / "BUSBRA" / "bus_data.csv"
    csv.write_text("".join(line + "\n" for line in csv.read_text().splitlines()
                           if not line.startswith(ids[1])))
    return f"busbra:{root}", ids[1]


def _unlisted_udiat(tmp):
    for i in (1, 2, 3):
        _save(tmp / "original" / f"{i:06d}.png", _img(seed=i))
        _save(tmp / "GT" / f"{i:06d}.png", _mask())
    (tmp / "DatasetB.csv").write_text("Image,Type\n000001,Benign\n000003,Malignant\n")
    return f"udiat_b:{tmp}", "000002"


@pytest.mark.parametrize("make", [_unlisted_busbra, _unlisted_udiat])
def test_an_image_missing_from_the_class_list_is_said_out_loud(tmp_path, make):
    spec, stem = make(tmp_path)
    ds = _load(spec)
    assert ds.meta["class"][ds.ids.index(stem)] == "unknown"
    assert len(ds.warnings) == 1 and "1 image(s) are not in" in ds.warnings[0]
    assert stem in ds.warnings[0] and "their class is 'unknown'" in ds.warnings[0]


# ---------------------------------------------------------------------------
# hints: the fix is the user's own spec with one option changed, never one that drops all
def _named(tmp, masks):
    for s in "abc":
        _save(tmp / "images" / f"{s}.png", _img())
    for m in masks:
        _save(tmp / "masks" / f"{m}.png", _mask())


@pytest.mark.parametrize("masks, given, hint", [
    # masks named with a suffix: the hint adds it, keeping modality and name
    ("a_mask b_mask c_mask", "?modality=ultrasound&name=mine",
     "?modality=ultrasound&name=mine&mask_suffix=_mask"),
    # a wrong suffix declared: the one that pairs replaces it, in its place
    ("a_mask b_mask c_mask", "?mask_suffix=_seg&modality=ultrasound",
     "?mask_suffix=_mask&modality=ultrasound"),
    # a suffix declared for masks named like the images: the hint drops it
    ("a b c", "?modality=xray&mask_suffix=_mask", "?modality=xray"),
    # some images without a mask: skip_unpaired keeps the two that pair
    ("a b", "?modality=ultrasound", "?modality=ultrasound&skip_unpaired=true"),
])
def test_a_hint_is_the_users_own_spec_with_the_fix(tmp_path, masks, given, hint):
    _named(tmp_path, masks.split())
    with pytest.raises(ValueError) as e:
        _load(f"folder:{tmp_path}{given}")
    assert f"give folder:{tmp_path}{hint}" in str(e.value)
    assert len(_load(f"folder:{tmp_path}{hint}")) == len(masks.split())   # the hint works


@pytest.mark.parametrize("masks, given", [
    ("x y z", ""),                                   # no mask has an image's name
    ("x y z", "?mask_suffix=_mask&modality=ultrasound"),
    ("a_seg b_seg c_seg", "?mask_suffix=_mask"),     # declared wrong, nothing else pairs either
])
def test_no_option_that_would_drop_every_image_is_suggested(tmp_path, masks, given):
    _named(tmp_path, masks.split())
    with pytest.raises(ValueError) as e:
        _load(f"folder:{tmp_path}{given}")
    assert "skip_unpaired" not in str(e.value)
    if "seg" in masks:
        assert f"give folder:{tmp_path}?mask_suffix=_seg" in str(e.value)
    else:
        assert "none of the 3 image(s) has a mask" in str(e.value)


# ---------------------------------------------------------------------------
# 12-bit data in 16-bit files
@pytest.mark.parametrize("largest, scale", [
    ([4000, 2000], 4095),        # 12-bit: read by its own range, said once
    ([4095], 4095),
    ([4096], 65535),             # past 12 bits: the type's range
    ([4000, 60000], 65535),      # one image uses the full range: all by the type's range
    ([200], 255),                # 8-bit: untouched
])
def test_12_bit_data_in_16_bit_pngs_is_scaled_by_4095_and_said(tmp_path, caplog, largest, scale):
    dtype = np.uint8 if scale == 255 else np.uint16
    for k, top in enumerate(largest):
        _save(tmp_path / "images" / f"{k}.png",
              np.linspace(0, top, 40 * 48).reshape(40, 48).round().astype(dtype))
        _save(tmp_path / "masks" / f"{k}.png", _mask())
    with caplog.at_level(logging.WARNING, logger="keras_unet_ft.data"):
        ds = load_dataset(f"folder:{tmp_path}", size=(40, 48), cache=False, progress=False)
    for k, top in enumerate(largest):
        assert ds.images[k].max() == pytest.approx(top / scale, abs=1e-4)
    said = [w for w in ds.warnings if "12-bit" in w]
    assert len(said) == (scale == 4095) and ("12-bit" in caplog.text) == (scale == 4095)
    if said:
        assert f"the {len(largest)} 16-bit image(s) hold values up to {max(largest)}" in said[0]


# ---------------------------------------------------------------------------
# masks emptied by the squash to the target size, not by the files
def _strip(h=10, w=1000, cols=(490, 510)):
    return _img(h, w), _mask(h, w, (0, h, *cols))


@pytest.mark.parametrize("shapes, message", [
    # both 1000x10 strips lose their 20 px wide object: refused, naming the squash
    ({"a": "strip", "b": "strip"}, r"all 2 masks are empty after resizing to 32x32, though 2 had "
                                   r"an object before \(e.g. a, 1000x10 px, aspect ratio 100:1\)"),
    # one of two: loaded, said out loud
    ({"a": "strip", "b": "plain"}, r"1 of the 2 masks with an object are empty after resizing "
                                   r"to 32x32 \(e.g. a, 1000x10 px, aspect ratio 100:1\): "
                                   r"squashing"),
    # masks empty in the files: the encoding error, not the squash
    ({"a": "empty", "b": "empty"}, r"all 2 masks are empty after reading"),
])
def test_masks_emptied_by_the_squash_name_the_aspect_ratio(tmp_path, shapes, message):
    for stem, kind in shapes.items():
        img, mask = _strip() if kind == "strip" else (_img(), _mask(value=0 if kind == "empty"
                                                                     else 255))
        _save(tmp_path / "images" / f"{stem}.png", img)
        _save(tmp_path / "masks" / f"{stem}.png", mask)
    if "plain" not in shapes.values():
        with pytest.raises(ValueError, match=message):
            _load(f"folder:{tmp_path}")
        return
    ds = _load(f"folder:{tmp_path}")
    assert ds.ids == ["a", "b"] and ds.masks[0].max() == 0 and ds.masks[1].max() == 1
    assert any(re.search(message, w) for w in ds.warnings), ds.warnings
