"""keras-unet-ft: which layers of a pretrained U-Net should you fine-tune?

A Keras 3 reproduction of Amiri, Brooks & Rivaz, "Fine tuning U-Net for
ultrasound image segmentation: which layers?" (MICCAI DART 2019; IEEE TUFFC
2020) and of Cheng & Lam's lung-ultrasound follow-up, usable on your own data.

Data flow (each module imports only from the lines above it; ``lint-imports``
checks it): ``config``/``io`` -> ``layout``/``provenance`` -> ``data`` ->
``model``/``vunet`` -> ``blocks`` -> ``plans`` -> ``metrics``/``stats``/``references``
-> ``runtime`` -> ``pretrain``/``finetune`` -> ``study`` -> ``results`` ->
``report``/``figures`` -> ``pipeline`` -> ``cli``/``notebook``. See the README's
"How the code is laid out". Importing the package sets nothing (no environment
variables, no TensorFlow import).
"""

__version__ = "0.1.0"
