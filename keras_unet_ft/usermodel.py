"""Your own network (``model.kind=file:PATH``): a Keras 3 ``.keras`` U-Net-like model."""
