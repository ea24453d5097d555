"""keras-unet-ft: which layers of a pretrained U-Net should you fine-tune?

A Keras 3 reproduction of Amiri, Brooks & Rivaz, "Fine tuning U-Net for
ultrasound image segmentation: which layers?" (MICCAI DART 2019; IEEE TUFFC
2020) and of Cheng & Lam's lung-ultrasound follow-up, usable on your own data.

Data flow: ``data`` -> ``model`` -> ``blocks``/``plans`` -> ``training`` ->
``metrics``/``study`` -> ``figures``/``report``.
"""

import os as _os

# TensorFlow C++ logs (oneDNN notices, tf.data attribute chatter) are noise here;
# set TF_CPP_MIN_LOG_LEVEL yourself to see them.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
