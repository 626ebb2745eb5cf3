"""Layer-normalized recurrent cells and layers for Keras 3 (Ba, Kiros & Hinton 2016).

`LayerNormLSTMCell`, `LayerNormGRUCell` and `LayerNormSimpleRNNCell` subclass the stock
Keras cells, so every stock constructor argument works unchanged and `build()` creates the
stock `kernel`, `recurrent_kernel` and `bias` first, with the stock shapes, gate order and
names. The normalization parameters come after them. `LayerNormLSTM`, `LayerNormGRU` and
`LayerNormSimpleRNN` are drop-in `keras.layers.RNN` layers taking the stock layers'
arguments. Every class is registered as `normify>ClassName`, so a saved model loads with a
plain `keras.saving.load_model` in any process that has run `import normify` (which
imports this module as soon as Keras is imported; see `normify._registration`).

Design, and where it departs from the paper and from TF Addons' (now unmaintained) cells:

- `LN(v) = (v - mean(v)) / sqrt(var(v) + epsilon) * gamma`. The input projection `x·W` and
  the recurrent projection `h·U` are normalized separately, as in the paper; the stock
  bias, added after normalization, is their shift. The paper's β1, β2 and b are
  redundant (only their sum matters), so there is no beta for the projections.
- Statistics are per gate: each gate's block of `units` features is normalized over those
  features alone. The paper and TF Addons normalize all gates' pre-activations jointly.
  Gates have distinct roles and scales, and joint statistics let one gate's scale shrink
  another's; and a GRU with `reset_after=False` computes its candidate's recurrent term
  separately, after the reset gate, so it has no consistent joint form.
- LSTM: the cell state is normalized only on its way to the output,
  `h = o * act(LN_c(c) * cell_gamma + cell_beta)`; the UN-normalized `c` is carried to
  the next step, as in the paper. TF Addons carried the normalized `c` forward.
- SimpleRNN: `h = act(LN_x(x·W) + b + LN_h(h·U))`, normalized separately as the paper
  does; TF Addons' `LayerNormSimpleRNNCell` normalized the sum `x·W + h·U` once.
- `epsilon` defaults to 1e-3, `keras.layers.LayerNormalization`'s default. Statistics
  are computed in float32 when the compute dtype is float16 or bfloat16.
- `normalize=False` skips every normalization and creates no norm weights: the cell then
  computes exactly the stock cell's function, with the stock op order (the tests check
  outputs bit for bit against the stock layers, which proves the weight layout and gate
  order). Dropout and recurrent dropout use the stock `DropoutRNNCell` masks exactly as
  the stock cells do, including the stock `implementation=1` path that
  `recurrent_dropout` selects.
- The layers subclass `keras.layers.RNN`, not `LSTM`/`GRU`, whose `inner_loop` tries the
  backend's fused (cuDNN) kernels: those cannot compute a normalized cell. So these layers
  always run the generic step loop, and are slower than stock layers on a GPU.
  `use_cudnn` is accepted for drop-in compatibility; `True` is refused.
- The layers name their cell like the stock layers do (`lstm_cell`, `gru_cell`,
  `simple_rnn_cell`), so variable paths inside a converted layer match the stock ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
from keras import constraints, initializers, ops, regularizers

# The names live in normify.incell, which rewrites configs without importing Keras;
# NORM_ARGUMENTS and NORM_WEIGHT_NAMES are part of this module's public names too.
from normify.incell import NORM_ARGUMENTS, NORM_WEIGHT_NAMES  # noqa: F401
from normify.incell import PACKAGE as _PACKAGE
from normify.incell import STOCK_TO_NORMALIZED as _NAMES

# Cell config keys that belong to the cell as a Layer rather than to the recurrence; the
# drop-in layers leave them out of their flat config, as the stock layers do.
_CELL_LAYER_KEYS = ("name", "trainable", "dtype")


class _LayerNormCellMixin:
    """Norm arguments, norm weights and the normalization itself, shared by the cells.

    Mixed in before the stock cell class, so `super()` reaches the stock cell.
    """

    # Gates per cell: how many `units`-wide blocks the projections hold.
    _gates: int = 1

    if TYPE_CHECKING:
        # Provided by the stock cell the mixin is combined with.
        units: int

        def add_weight(self, *args: Any, **kwargs: Any) -> Any: ...

    def _init_norm(
        self,
        normalize: bool,
        epsilon: float,
        gamma_initializer: Any,
        beta_initializer: Any,
        gamma_regularizer: Any,
        beta_regularizer: Any,
        gamma_constraint: Any,
        beta_constraint: Any,
    ) -> None:
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.normalize = bool(normalize)
        self.epsilon = float(epsilon)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_constraint = constraints.get(beta_constraint)
        self.input_gamma = None
        self.recurrent_gamma = None

    def _add_gamma(self, name: str, size: int) -> Any:
        return self.add_weight(
            shape=(size,),
            name=name,
            initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer,
            constraint=self.gamma_constraint,
        )

    def _build_norm_weights(self) -> None:
        # Called after the stock build, so the stock weights keep their positions 0-2.
        if not self.normalize:
            return
        self.input_gamma = self._add_gamma("input_gamma", self._gates * self.units)
        self.recurrent_gamma = self._add_gamma("recurrent_gamma", self._gates * self.units)

    def _norm(self, projection: Any, gamma: Any, blocks: int) -> Any:
        """Per-gate layer normalization of `projection` (batch, blocks * units).

        Returns `projection` itself when normalization is off, so the disabled cell runs
        the stock ops and nothing else.
        """
        if not self.normalize:
            return projection
        dtype = keras.backend.standardize_dtype(projection.dtype)
        # Half-precision variance loses too much; LayerNormalization does the same.
        stats_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
        values = ops.cast(projection, stats_dtype)
        if blocks > 1:
            values = ops.reshape(values, (-1, blocks, self.units))
        mean, variance = ops.moments(values, axes=[-1], keepdims=True)
        normalized = (values - mean) * ops.rsqrt(variance + self.epsilon)
        if blocks > 1:
            normalized = ops.reshape(normalized, (-1, blocks * self.units))
        return ops.cast(normalized * ops.cast(gamma, stats_dtype), dtype)

    def _gamma_block(self, gamma: Any, index: int, count: int = 1) -> Any:
        """Gamma for gate blocks index..index+count-1 (None when normalization is off)."""
        if gamma is None:
            return None
        return gamma[index * self.units : (index + count) * self.units]

    def _norm_config(self) -> dict[str, Any]:
        return {
            "normalize": self.normalize,
            "epsilon": self.epsilon,
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
            "beta_constraint": constraints.serialize(self.beta_constraint),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNormLSTMCell(_LayerNormCellMixin, keras.layers.LSTMCell):
    """`keras.layers.LSTMCell` with layer normalization (Ba, Kiros & Hinton 2016).

    `z = LN_x(x·W) + LN_h(h·U) + b`, gates i, f, c̃, o in Keras's order,
    `c = f * c_prev + i * act(c̃)` (carried forward un-normalized) and
    `h = o * act(LN_c(c) * cell_gamma + cell_beta)`. Normalization is per gate.
    Takes every `LSTMCell` argument, plus the norm arguments (see the module docstring).
    """

    _gates = 4

    def __init__(
        self,
        units: int,
        *args: Any,
        normalize: bool = True,
        epsilon: float = 1e-3,
        gamma_initializer: Any = "ones",
        beta_initializer: Any = "zeros",
        gamma_regularizer: Any = None,
        beta_regularizer: Any = None,
        gamma_constraint: Any = None,
        beta_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(units, *args, **kwargs)
        self._init_norm(
            normalize,
            epsilon,
            gamma_initializer,
            beta_initializer,
            gamma_regularizer,
            beta_regularizer,
            gamma_constraint,
            beta_constraint,
        )
        self.cell_gamma = None
        self.cell_beta = None

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._build_norm_weights()
        if self.normalize:
            self.cell_gamma = self._add_gamma("cell_gamma", self.units)
            self.cell_beta = self.add_weight(
                shape=(self.units,),
                name="cell_beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
            )

    def _output_candidate(self, c: Any) -> Any:
        """What the output gate multiplies: `act(c)`, with `c` normalized first if on."""
        if self.normalize:
            c = self._norm(c, self.cell_gamma, 1) + ops.cast(self.cell_beta, c.dtype)
        return self.activation(c)

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, list[Any]]:
        # Mirrors keras.layers.LSTMCell.call op for op (both implementations), with the
        # projections normalized before the bias is added.
        h_tm1 = states[0]
        c_tm1 = states[1]
        units = self.units
        gamma_x, gamma_h = self.input_gamma, self.recurrent_gamma

        if self.implementation == 1:
            if training and 0.0 < self.dropout < 1.0:
                dp_mask = self.get_dropout_mask(inputs)
                inputs_i = inputs * dp_mask[0]
                inputs_f = inputs * dp_mask[1]
                inputs_c = inputs * dp_mask[2]
                inputs_o = inputs * dp_mask[3]
            else:
                inputs_i = inputs_f = inputs_c = inputs_o = inputs
            k_i, k_f, k_c, k_o = ops.split(self.kernel, 4, axis=1)
            x_i = self._norm(ops.matmul(inputs_i, k_i), self._gamma_block(gamma_x, 0), 1)
            x_f = self._norm(ops.matmul(inputs_f, k_f), self._gamma_block(gamma_x, 1), 1)
            x_c = self._norm(ops.matmul(inputs_c, k_c), self._gamma_block(gamma_x, 2), 1)
            x_o = self._norm(ops.matmul(inputs_o, k_o), self._gamma_block(gamma_x, 3), 1)
            if self.use_bias:
                b_i, b_f, b_c, b_o = ops.split(self.bias, 4, axis=0)
                x_i += b_i
                x_f += b_f
                x_c += b_c
                x_o += b_o

            if training and 0.0 < self.recurrent_dropout < 1.0:
                rec_dp_mask = self.get_recurrent_dropout_mask(h_tm1)
                h_tm1_i = h_tm1 * rec_dp_mask[0]
                h_tm1_f = h_tm1 * rec_dp_mask[1]
                h_tm1_c = h_tm1 * rec_dp_mask[2]
                h_tm1_o = h_tm1 * rec_dp_mask[3]
            else:
                h_tm1_i = h_tm1_f = h_tm1_c = h_tm1_o = h_tm1
            kernel = self.recurrent_kernel
            r_i = self._norm(
                ops.matmul(h_tm1_i, kernel[:, :units]), self._gamma_block(gamma_h, 0), 1
            )
            r_f = self._norm(
                ops.matmul(h_tm1_f, kernel[:, units : units * 2]), self._gamma_block(gamma_h, 1), 1
            )
            r_c = self._norm(
                ops.matmul(h_tm1_c, kernel[:, units * 2 : units * 3]),
                self._gamma_block(gamma_h, 2),
                1,
            )
            r_o = self._norm(
                ops.matmul(h_tm1_o, kernel[:, units * 3 :]), self._gamma_block(gamma_h, 3), 1
            )
            i = self.recurrent_activation(x_i + r_i)
            f = self.recurrent_activation(x_f + r_f)
            c = f * c_tm1 + i * self.activation(x_c + r_c)
            o = self.recurrent_activation(x_o + r_o)
        else:
            if training and 0.0 < self.dropout < 1.0:
                dp_mask = self.get_dropout_mask(inputs)
                inputs = inputs * dp_mask
            z = self._norm(ops.matmul(inputs, self.kernel), gamma_x, 4)
            z = ops.add(z, self._norm(ops.matmul(h_tm1, self.recurrent_kernel), gamma_h, 4))
            if self.use_bias:
                z = ops.add(z, self.bias)
            z0, z1, z2, z3 = ops.split(z, 4, axis=1)
            i = self.recurrent_activation(z0)
            f = self.recurrent_activation(z1)
            c = f * c_tm1 + i * self.activation(z2)
            o = self.recurrent_activation(z3)

        h = o * self._output_candidate(c)
        return h, [h, c]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._norm_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNormGRUCell(_LayerNormCellMixin, keras.layers.GRUCell):
    """`keras.layers.GRUCell` with layer normalization (Ba, Kiros & Hinton 2016).

    The input projection `x·W` and the recurrent projection `h·U` are normalized per gate
    before their biases are added; the rest is the stock GRU. With `reset_after=False`
    the candidate's recurrent term `(r * h)·U_h` is normalized with the third block of
    `recurrent_gamma`. Takes every `GRUCell` argument, plus the norm arguments.
    """

    _gates = 3

    def __init__(
        self,
        units: int,
        *args: Any,
        normalize: bool = True,
        epsilon: float = 1e-3,
        gamma_initializer: Any = "ones",
        beta_initializer: Any = "zeros",
        gamma_regularizer: Any = None,
        beta_regularizer: Any = None,
        gamma_constraint: Any = None,
        beta_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(units, *args, **kwargs)
        self._init_norm(
            normalize,
            epsilon,
            gamma_initializer,
            beta_initializer,
            gamma_regularizer,
            beta_regularizer,
            gamma_constraint,
            beta_constraint,
        )

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._build_norm_weights()

    def call(self, inputs: Any, states: Any, training: bool = False) -> tuple[Any, Any]:
        # Mirrors keras.layers.GRUCell.call op for op (both implementations, both
        # reset_after modes), with every projection normalized before its bias is added.
        nested = isinstance(states, (list, tuple))
        h_tm1 = states[0] if nested else states
        units = self.units
        gamma_x, gamma_h = self.input_gamma, self.recurrent_gamma
        recurrent_bias: Any

        if self.use_bias:
            if not self.reset_after:
                input_bias, recurrent_bias = self.bias, None
            else:
                input_bias, recurrent_bias = (
                    ops.squeeze(e, axis=0) for e in ops.split(self.bias, self.bias.shape[0], axis=0)
                )

        if self.implementation == 1:
            if training and 0.0 < self.dropout < 1.0:
                dp_mask = self.get_dropout_mask(inputs)
                inputs_z = inputs * dp_mask[0]
                inputs_r = inputs * dp_mask[1]
                inputs_h = inputs * dp_mask[2]
            else:
                inputs_z = inputs_r = inputs_h = inputs

            x_z = self._norm(
                ops.matmul(inputs_z, self.kernel[:, :units]), self._gamma_block(gamma_x, 0), 1
            )
            x_r = self._norm(
                ops.matmul(inputs_r, self.kernel[:, units : units * 2]),
                self._gamma_block(gamma_x, 1),
                1,
            )
            x_h = self._norm(
                ops.matmul(inputs_h, self.kernel[:, units * 2 :]), self._gamma_block(gamma_x, 2), 1
            )
            if self.use_bias:
                x_z += input_bias[:units]
                x_r += input_bias[units : units * 2]
                x_h += input_bias[units * 2 :]

            if training and 0.0 < self.recurrent_dropout < 1.0:
                rec_dp_mask = self.get_recurrent_dropout_mask(h_tm1)
                h_tm1_z = h_tm1 * rec_dp_mask[0]
                h_tm1_r = h_tm1 * rec_dp_mask[1]
                h_tm1_h = h_tm1 * rec_dp_mask[2]
            else:
                h_tm1_z = h_tm1_r = h_tm1_h = h_tm1

            recurrent_z = self._norm(
                ops.matmul(h_tm1_z, self.recurrent_kernel[:, :units]),
                self._gamma_block(gamma_h, 0),
                1,
            )
            recurrent_r = self._norm(
                ops.matmul(h_tm1_r, self.recurrent_kernel[:, units : units * 2]),
                self._gamma_block(gamma_h, 1),
                1,
            )
            if self.reset_after and self.use_bias:
                recurrent_z += recurrent_bias[:units]
                recurrent_r += recurrent_bias[units : units * 2]

            z = self.recurrent_activation(x_z + recurrent_z)
            r = self.recurrent_activation(x_r + recurrent_r)

            if self.reset_after:
                recurrent_h = self._norm(
                    ops.matmul(h_tm1_h, self.recurrent_kernel[:, units * 2 :]),
                    self._gamma_block(gamma_h, 2),
                    1,
                )
                if self.use_bias:
                    recurrent_h += recurrent_bias[units * 2 :]
                recurrent_h = r * recurrent_h
            else:
                recurrent_h = self._norm(
                    ops.matmul(r * h_tm1_h, self.recurrent_kernel[:, units * 2 :]),
                    self._gamma_block(gamma_h, 2),
                    1,
                )

            hh = self.activation(x_h + recurrent_h)
        else:
            if training and 0.0 < self.dropout < 1.0:
                dp_mask = self.get_dropout_mask(inputs)
                inputs = inputs * dp_mask

            matrix_x = self._norm(ops.matmul(inputs, self.kernel), gamma_x, 3)
            if self.use_bias:
                matrix_x = ops.add(matrix_x, input_bias)

            x_z, x_r, x_h = ops.split(matrix_x, 3, axis=-1)

            if self.reset_after:
                matrix_inner = self._norm(ops.matmul(h_tm1, self.recurrent_kernel), gamma_h, 3)
                if self.use_bias:
                    matrix_inner += recurrent_bias
            else:
                # Update and reset gates only: the candidate's term needs r first.
                matrix_inner = self._norm(
                    ops.matmul(h_tm1, self.recurrent_kernel[:, : 2 * units]),
                    self._gamma_block(gamma_h, 0, 2),
                    2,
                )

            recurrent_z = matrix_inner[:, :units]
            recurrent_r = matrix_inner[:, units : units * 2]
            recurrent_h = matrix_inner[:, units * 2 :]

            z = self.recurrent_activation(x_z + recurrent_z)
            r = self.recurrent_activation(x_r + recurrent_r)

            if self.reset_after:
                recurrent_h = r * recurrent_h
            else:
                recurrent_h = self._norm(
                    ops.matmul(r * h_tm1, self.recurrent_kernel[:, 2 * units :]),
                    self._gamma_block(gamma_h, 2),
                    1,
                )

            hh = self.activation(x_h + recurrent_h)

        h = z * h_tm1 + (1 - z) * hh
        new_state = [h] if nested else h
        return h, new_state

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._norm_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNormSimpleRNNCell(_LayerNormCellMixin, keras.layers.SimpleRNNCell):
    """`keras.layers.SimpleRNNCell` with layer normalization (Ba, Kiros & Hinton 2016).

    `h = act(LN_x(x·W) + b + LN_h(h_prev·U))`: the two projections are normalized
    separately, as in the paper. Takes every `SimpleRNNCell` argument, plus the norm
    arguments (see the module docstring).
    """

    _gates = 1

    def __init__(
        self,
        units: int,
        *args: Any,
        normalize: bool = True,
        epsilon: float = 1e-3,
        gamma_initializer: Any = "ones",
        beta_initializer: Any = "zeros",
        gamma_regularizer: Any = None,
        beta_regularizer: Any = None,
        gamma_constraint: Any = None,
        beta_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(units, *args, **kwargs)
        self._init_norm(
            normalize,
            epsilon,
            gamma_initializer,
            beta_initializer,
            gamma_regularizer,
            beta_regularizer,
            gamma_constraint,
            beta_constraint,
        )

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._build_norm_weights()

    def call(self, sequence: Any, states: Any, training: bool = False) -> tuple[Any, Any]:
        # Mirrors keras.layers.SimpleRNNCell.call op for op.
        nested = isinstance(states, (list, tuple))
        prev_output = states[0] if nested else states
        dp_mask = self.get_dropout_mask(sequence)
        rec_dp_mask = self.get_recurrent_dropout_mask(prev_output)

        if training and dp_mask is not None:
            sequence = sequence * dp_mask
        h = self._norm(ops.matmul(sequence, self.kernel), self.input_gamma, 1)
        if self.bias is not None:
            h = ops.add(h, self.bias)

        if training and rec_dp_mask is not None:
            prev_output = prev_output * rec_dp_mask
        output = h + self._norm(
            ops.matmul(prev_output, self.recurrent_kernel), self.recurrent_gamma, 1
        )
        if self.activation is not None:
            output = self.activation(output)

        new_state = [output] if nested else output
        return output, new_state

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._norm_config()}


def _cell_property(name: str) -> property:
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}`.")


class _LayerNormRNN(keras.layers.RNN):
    """What the three drop-in layers share: validation, properties and the flat config."""

    def _init_layer(self, cell: Any, use_cudnn: Any = None, **rnn_kwargs: Any) -> None:
        # use_cudnn is None for SimpleRNN, which has no such argument.
        if use_cudnn is not None and use_cudnn not in ("auto", True, False):
            raise ValueError(
                "Invalid value received for argument `use_cudnn`. "
                f"Expected one of {{'auto', True, False}}. Received: use_cudnn={use_cudnn}"
            )
        if use_cudnn is True:
            # No fused kernel computes a normalized cell; the stock layers raise the same
            # way (at call time) when cuDNN cannot be used.
            raise ValueError(
                f"use_cudnn=True: {type(self).__name__} has no cuDNN implementation, "
                "its layer-normalized cell always runs the generic RNN loop. "
                "Pass use_cudnn='auto' or False."
            )
        super().__init__(cell, **rnn_kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=3)
        if use_cudnn is not None:
            # Kept (not serialized, like the stock layers) so Bidirectional can copy it.
            self.use_cudnn = use_cudnn

    units = _cell_property("units")
    activation = _cell_property("activation")
    use_bias = _cell_property("use_bias")
    kernel_initializer = _cell_property("kernel_initializer")
    recurrent_initializer = _cell_property("recurrent_initializer")
    bias_initializer = _cell_property("bias_initializer")
    kernel_regularizer = _cell_property("kernel_regularizer")
    recurrent_regularizer = _cell_property("recurrent_regularizer")
    bias_regularizer = _cell_property("bias_regularizer")
    kernel_constraint = _cell_property("kernel_constraint")
    recurrent_constraint = _cell_property("recurrent_constraint")
    bias_constraint = _cell_property("bias_constraint")
    dropout = _cell_property("dropout")
    recurrent_dropout = _cell_property("recurrent_dropout")
    normalize = _cell_property("normalize")
    epsilon = _cell_property("epsilon")
    gamma_initializer = _cell_property("gamma_initializer")
    beta_initializer = _cell_property("beta_initializer")
    gamma_regularizer = _cell_property("gamma_regularizer")
    beta_regularizer = _cell_property("beta_regularizer")
    gamma_constraint = _cell_property("gamma_constraint")
    beta_constraint = _cell_property("beta_constraint")

    def get_config(self) -> dict[str, Any]:
        # The stock layers' flat form: RNN options, then the cell's own arguments (which
        # include the norm arguments), then the layer's activity_regularizer.
        cell_config = self.cell.get_config()
        for key in _CELL_LAYER_KEYS:
            cell_config.pop(key, None)
        base_config = super().get_config()
        del base_config["cell"]
        return {
            **base_config,
            **cell_config,
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
        return cls(**config)


def _norm_kwargs(
    normalize: bool,
    epsilon: float,
    gamma_initializer: Any,
    beta_initializer: Any,
    gamma_regularizer: Any,
    beta_regularizer: Any,
    gamma_constraint: Any,
    beta_constraint: Any,
) -> dict[str, Any]:
    return {
        "normalize": normalize,
        "epsilon": epsilon,
        "gamma_initializer": gamma_initializer,
        "beta_initializer": beta_initializer,
        "gamma_regularizer": gamma_regularizer,
        "beta_regularizer": beta_regularizer,
        "gamma_constraint": gamma_constraint,
        "beta_constraint": beta_constraint,
    }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNormLSTM(_LayerNormRNN):
    """Drop-in `keras.layers.LSTM` whose cell is a `LayerNormLSTMCell`.

    Same arguments as `keras.layers.LSTM`, plus the norm arguments. Always runs the
    generic RNN loop (no fused/cuDNN kernel exists for the normalized cell).
    """

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        unit_forget_bias: bool = True,
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: Any = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        use_cudnn: Any = "auto",
        normalize: bool = True,
        epsilon: float = 1e-3,
        gamma_initializer: Any = "ones",
        beta_initializer: Any = "zeros",
        gamma_regularizer: Any = None,
        beta_regularizer: Any = None,
        gamma_constraint: Any = None,
        beta_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        cell = LayerNormLSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            unit_forget_bias=unit_forget_bias,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="lstm_cell",
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
            **_norm_kwargs(
                normalize,
                epsilon,
                gamma_initializer,
                beta_initializer,
                gamma_regularizer,
                beta_regularizer,
                gamma_constraint,
                beta_constraint,
            ),
        )
        self._init_layer(
            cell,
            use_cudnn,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )

    recurrent_activation = _cell_property("recurrent_activation")
    unit_forget_bias = _cell_property("unit_forget_bias")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNormGRU(_LayerNormRNN):
    """Drop-in `keras.layers.GRU` whose cell is a `LayerNormGRUCell`.

    Same arguments as `keras.layers.GRU` (including `reset_after`), plus the norm
    arguments. Always runs the generic RNN loop.
    """

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: Any = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        reset_after: bool = True,
        use_cudnn: Any = "auto",
        normalize: bool = True,
        epsilon: float = 1e-3,
        gamma_initializer: Any = "ones",
        beta_initializer: Any = "zeros",
        gamma_regularizer: Any = None,
        beta_regularizer: Any = None,
        gamma_constraint: Any = None,
        beta_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        cell = LayerNormGRUCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            reset_after=reset_after,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="gru_cell",
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
            **_norm_kwargs(
                normalize,
                epsilon,
                gamma_initializer,
                beta_initializer,
                gamma_regularizer,
                beta_regularizer,
                gamma_constraint,
                beta_constraint,
            ),
        )
        self._init_layer(
            cell,
            use_cudnn,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )

    recurrent_activation = _cell_property("recurrent_activation")
    reset_after = _cell_property("reset_after")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNormSimpleRNN(_LayerNormRNN):
    """Drop-in `keras.layers.SimpleRNN` whose cell is a `LayerNormSimpleRNNCell`.

    Same arguments as `keras.layers.SimpleRNN`, plus the norm arguments.
    """

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        recurrent_initializer: Any = "orthogonal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        recurrent_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        recurrent_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        seed: Any = None,
        normalize: bool = True,
        epsilon: float = 1e-3,
        gamma_initializer: Any = "ones",
        beta_initializer: Any = "zeros",
        gamma_regularizer: Any = None,
        beta_regularizer: Any = None,
        gamma_constraint: Any = None,
        beta_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        cell = LayerNormSimpleRNNCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="simple_rnn_cell",
            **_norm_kwargs(
                normalize,
                epsilon,
                gamma_initializer,
                beta_initializer,
                gamma_regularizer,
                beta_regularizer,
                gamma_constraint,
                beta_constraint,
            ),
        )
        self._init_layer(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )


STOCK_TO_NORMALIZED: dict[str, type] = {stock: globals()[ours] for stock, ours in _NAMES.items()}
NORMALIZED_TO_STOCK: dict[str, type] = {
    ours: getattr(keras.layers, stock) for stock, ours in _NAMES.items()
}
