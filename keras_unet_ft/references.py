"""The papers' reference numbers, as data (docs/paper.md gives their sources).

Every number the report compares against lives here and only here.
"""

from __future__ import annotations

# Amiri, Brooks & Rivaz (MICCAI DART 2019), Table 1: mean +- std over 5 folds
# (std not given for X-ray). Keys: modality -> plan -> metric -> (mean, std).
PAPER = {
    "ultrasound": {
        "contracting": {"dice": (0.80, 0.03), "pixel_error": (1.4, 0.5), "adjusted_rand": (0.78, 0.03)},
        "expanding": {"dice": (0.72, 0.04), "pixel_error": (1.9, 0.6), "adjusted_rand": (0.71, 0.05)},
    },
    "xray": {
        "contracting": {"dice": (0.98, None), "pixel_error": (1.1, None), "adjusted_rand": (0.95, None)},
        "expanding": {"dice": (0.98, None), "pixel_error": (1.3, None), "adjusted_rand": (0.95, None)},
    },
}
PAPER_DATA = {"ultrasound": "breast US, UDIAT Dataset B (163 images)",
              "xray": "chest X-ray, 240 images (JSRT/SCR)"}

# zhixuhao's U-Net at 256 x 256 x 1 (docs/paper.md A)
PAPER_UNET_PARAMS = 31_031_685
PAPER_CONTRACTING_PARAMS = 9_403_840     # conv layers 1-9
PAPER_EXPANDING_PARAMS = 21_627_845      # conv layers 10-24
PAPER_CONTRACTING_RATIO = 0.43           # "almost half"
PAPER_BLOCK_SHARES = (0.12, 0.71, 2.85, 11.41, 45.62, 29.57, 7.39, 1.85, 0.47)  # % per block

# Cheng & Lam (2021): 5-fold CV Dice of their notebooks, and their test split
CHENG = {"xunet/all": (0.814, 0.007), "xunet/freeze_bottleneck": (0.799, 0.011)}
CHENG_TEST = {"vunet": 0.86, "xunet": 0.83}
CHENG_FROZEN_BOTTLENECK_PARAMS = 14_157_824
