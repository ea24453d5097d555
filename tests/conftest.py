import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("UNET_FT_MAX_AM_STEPS", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
