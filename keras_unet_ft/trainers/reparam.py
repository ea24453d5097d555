"""Parameter-efficient fine-tuning without adapter layers: ``ssf`` and ``lora:R``.

Each kind learns a few tensors beside frozen pretrained kernels. The model itself stays a
plain U-Net: the trainer computes the gradients of the kernels (and biases) the learned
tensors feed, derives the learned tensors' gradients from them by the chain rule, steps
them with their own Adam, and writes the merged kernels back after every step. A trained
model therefore saves, loads, predicts and exports like any other (no custom layers).

- ``ssf`` (Lian et al. 2022): the output of every convolution, before its activation, is
  scaled and shifted per channel: ``y = gamma * (conv(x, W0) + b0) + beta``, which is the
  convolution with ``W = W0 * gamma`` and ``b = b0 * gamma + beta``. Gradients:
  ``dL/dgamma_c = sum(W0[..., c] * dL/dW[..., c]) + b0_c * dL/db_c``, ``dL/dbeta = dL/db``.
- ``lora:R`` (Hu et al. 2022): every 3x3 kernel is ``W0 + reshape(U @ V)`` with ``U``
  ``(kh*kw*cin, R)`` drawn uniformly in ``+-1/sqrt(kh*kw*cin)`` and ``V`` ``(R, cout)``
  starting at zero (so training starts at the pretrained net). With ``G`` the kernel's
  gradient reshaped ``(kh*kw*cin, cout)``: ``dL/dU = G V^T``, ``dL/dV = U^T G``.

Both start from the weights the run starts from (:meth:`Reparam.start`), so ``W0`` and
``b0`` are the pretrained values and never change.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


#: ``KindSpec.reparam`` -> its :class:`Reparam` class (each subclass with a ``kind`` registers
#: itself: adding one is its class here and its row in ``plans.KIND_SPECS``)
REPARAMS: Dict[str, type] = {}


class Reparam:
    """The learned tensors of one plan kind on a set of layers, and their optimizer.

    Args:
        layers: the Keras layers (convolutions) whose kernels the kind updates.
        learning_rate: Adam's rate for the learned tensors.

    Attributes:
        variables: the learned tensors (``tf.Variable``), in a fixed order.
        n_params: how many scalars they hold.
    """

    #: the plan kind's ``reparam`` (:attr:`keras_unet_ft.plans.KindSpec.reparam`): a subclass
    #: with a ``kind`` is registered in :data:`REPARAMS` under it
    kind = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.kind:
            REPARAMS[cls.kind] = cls

    @classmethod
    def for_plan(cls, plan, layers: Sequence, learning_rate: float) -> "Reparam":
        """This kind's learned tensors for ``plan`` on ``layers`` (LoRA: at ``plan.rank``)."""
        return cls(layers, learning_rate)

    @classmethod
    def refusal(cls, plan, layer) -> Optional[str]:
        """Why this kind cannot update ``layer`` (a sentence naming the plan and the layer),
        or None when it can."""
        return None

    def __init__(self, layers: Sequence, learning_rate: float):
        import keras
        import tensorflow as tf

        self.layers = list(layers)
        self.base_k = [tf.Variable(np.array(l.kernel.numpy()), trainable=False,
                                   name=f"{l.name}_base_kernel") for l in self.layers]
        self.base_b = [None if l.bias is None else   # lora: a convolution without bias
                       tf.Variable(np.array(l.bias.numpy()), trainable=False,
                                   name=f"{l.name}_base_bias") for l in self.layers]
        self.variables: List = self._make_variables()
        self.n_params = int(sum(np.prod(v.shape) for v in self.variables))
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.variables)
        self._opt_state = [np.array(v.numpy()) for v in self.optimizer.variables]

    def _make_variables(self) -> list:
        raise NotImplementedError

    def _initial(self, seed: int) -> List[np.ndarray]:
        """The learned tensors' starting values (the pretrained net unchanged)."""
        raise NotImplementedError

    def start(self, seed: int, learning_rate: float) -> None:
        """A new run: the layers' current weights become the frozen ``W0``/``b0``, the
        learned tensors their starting values (seeded), the optimizer state zero."""
        for l, bk, bb in zip(self.layers, self.base_k, self.base_b):
            bk.assign(l.kernel.value)
            if bb is not None:
                bb.assign(l.bias.value)
        for v, value in zip(self.variables, self._initial(seed)):
            v.assign(value)
        for v, value in zip(self.optimizer.variables, self._opt_state):
            v.assign(value)
        self.set_rate(learning_rate)
        self.merge()

    def set_rate(self, learning_rate: float) -> None:
        self.optimizer.learning_rate = float(learning_rate)

    def apply(self, grads_of: Dict[int, object]) -> None:
        """One step: the learned tensors' gradients from the kernels' and biases'
        (``{id(variable): gradient}``), Adam on them, the merged weights written back."""
        self.optimizer.apply_gradients(zip(self._grads(grads_of), self.variables))
        self.merge()

    def _grads(self, grads_of) -> list:
        raise NotImplementedError

    def merge(self) -> None:
        """Write ``W0``/``b0`` combined with the learned tensors into the layers."""
        raise NotImplementedError

    @staticmethod
    def _grad(grads_of, var):
        import tensorflow as tf

        g = grads_of.get(id(var))
        return tf.zeros_like(var.value) if g is None else tf.cast(g, "float32")


class SSF(Reparam):
    """A scale ``gamma`` and a shift ``beta`` per output channel of every layer."""

    kind = "ssf"

    @classmethod
    def refusal(cls, plan, layer) -> Optional[str]:
        """SSF needs plain ``Conv2D`` layers with a bias: its shift is folded into the bias,
        its scale into the output channels of the kernel."""
        import keras

        if not isinstance(layer, keras.layers.Conv2D):
            return (f"plan {str(plan)!r} cannot train layer {layer.name!r} "
                    f"({type(layer).__name__}): ssf scales and shifts the output channels of "
                    "Conv2D layers only; choose another plan for this network")
        if layer.bias is None:
            return (f"plan {str(plan)!r} cannot train layer {layer.name!r} (Conv2D without a "
                    "bias): ssf folds its shift into the convolution's bias; choose another "
                    "plan for this network")
        return None

    def _make_variables(self) -> list:
        import tensorflow as tf

        out = []
        for l in self.layers:
            c = int(l.kernel.shape[-1])
            out += [tf.Variable(np.ones(c, np.float32), name=f"{l.name}_ssf_scale"),
                    tf.Variable(np.zeros(c, np.float32), name=f"{l.name}_ssf_shift")]
        return out

    def _initial(self, seed: int) -> List[np.ndarray]:
        return [np.ones(v.shape, np.float32) if i % 2 == 0 else np.zeros(v.shape, np.float32)
                for i, v in enumerate(self.variables)]

    def _grads(self, grads_of) -> list:
        import tensorflow as tf

        out = []
        for l, w0, b0 in zip(self.layers, self.base_k, self.base_b):
            gk, gb = self._grad(grads_of, l.kernel), self._grad(grads_of, l.bias)
            axes = list(range(len(w0.shape) - 1))
            out += [tf.reduce_sum(w0 * gk, axis=axes) + b0 * gb, gb]
        return out

    def merge(self) -> None:
        for i, (l, w0, b0) in enumerate(zip(self.layers, self.base_k, self.base_b)):
            gamma, beta = self.variables[2 * i], self.variables[2 * i + 1]
            l.kernel.assign(w0 * gamma)
            l.bias.assign(b0 * gamma + beta)


class LoRA(Reparam):
    """A rank-``rank`` update ``U V`` of every layer's kernel, reshaped to
    ``(kh*kw*cin, cout)``; biases frozen."""

    kind = "lora"

    def __init__(self, layers: Sequence, learning_rate: float, rank: int):
        self.rank = int(rank)
        super().__init__(layers, learning_rate)

    @classmethod
    def for_plan(cls, plan, layers: Sequence, learning_rate: float) -> "LoRA":
        return cls(layers, learning_rate, plan.rank)

    @classmethod
    def refusal(cls, plan, layer) -> Optional[str]:
        """LoRA needs a ``Conv2D`` or ``Conv2DTranspose`` kernel (a depthwise kernel has no
        input-by-output matrix to update)."""
        import keras

        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            return (f"plan {str(plan)!r} cannot train layer {layer.name!r} "
                    f"({type(layer).__name__}): lora updates the kernels of Conv2D and "
                    "Conv2DTranspose layers only, not a depthwise or other kernel; choose "
                    "another plan for this network")
        return None

    def _make_variables(self) -> list:
        import tensorflow as tf

        out = []
        for l in self.layers:
            fan, cout = int(np.prod(l.kernel.shape[:-1])), int(l.kernel.shape[-1])
            out += [tf.Variable(np.zeros((fan, self.rank), np.float32), name=f"{l.name}_lora_u"),
                    tf.Variable(np.zeros((self.rank, cout), np.float32), name=f"{l.name}_lora_v")]
        return out

    def _initial(self, seed: int) -> List[np.ndarray]:
        rng = np.random.default_rng([int(seed), 1729])
        out = []
        for i, v in enumerate(self.variables):
            if i % 2 == 0:   # U: LoRA's A, uniform in +-1/sqrt(fan_in)
                bound = 1.0 / np.sqrt(v.shape[0])
                out.append(rng.uniform(-bound, bound, tuple(v.shape)).astype(np.float32))
            else:            # V: LoRA's B, zero: the update starts at 0
                out.append(np.zeros(v.shape, np.float32))
        return out

    def _grads(self, grads_of) -> list:
        import tensorflow as tf

        out = []
        for i, l in enumerate(self.layers):
            u, v = self.variables[2 * i], self.variables[2 * i + 1]
            g = tf.reshape(self._grad(grads_of, l.kernel), (u.shape[0], v.shape[1]))
            out += [tf.matmul(g, v, transpose_b=True), tf.matmul(u, g, transpose_a=True)]
        return out

    def merge(self) -> None:
        import tensorflow as tf

        for i, (l, w0) in enumerate(zip(self.layers, self.base_k)):
            u, v = self.variables[2 * i], self.variables[2 * i + 1]
            l.kernel.assign(w0 + tf.reshape(tf.matmul(u, v), w0.shape))


def check_layers(plan, layers: Sequence) -> None:
    """Refuse (:class:`~keras_unet_ft.plans.PlanError`) a layer ``plan`` cannot update (its
    kind's :meth:`Reparam.refusal`: ``ssf`` needs plain ``Conv2D`` layers with a bias,
    ``lora`` a ``Conv2D`` or ``Conv2DTranspose`` kernel)."""
    from ..plans import PlanError

    cls = reparam_class(plan)
    for layer in layers:
        why = cls.refusal(plan, layer)
        if why is not None:
            raise PlanError(why)


def reparam_class(plan) -> type:
    """The :class:`Reparam` class of ``plan``'s kind, chosen through its row of the kind
    table (:attr:`keras_unet_ft.plans.KindSpec.reparam`, a key of :data:`REPARAMS`)."""
    if plan.reparam not in REPARAMS:
        raise ValueError(f"plan {str(plan)!r} learns no tensors beside its kernels")
    return REPARAMS[plan.reparam]


def make_reparam(plan, model, layers, learning_rate: float) -> Reparam:
    """The :class:`Reparam` of ``plan``'s kind (``ssf``, ``lora``: :data:`REPARAMS`) on the
    named ``layers`` of ``model`` (in model order); a layer the kind cannot update is refused
    (:func:`check_layers`)."""
    chosen = [l for l in model.layers if l.name in set(layers)]
    check_layers(plan, chosen)
    return reparam_class(plan).for_plan(plan, chosen, learning_rate)
