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
- Speed: the drop-in layers compute the input side `LN(x·W) + b` for every time step at
  once, before the step loop (`_LayerNormRNN.inner_loop`); each step computes only
  `LN(h·U)` (and the LSTM's `LN(c)`). Input dropout masks are drawn once per sequence,
  as the step loop does, so the two orders give the same function. The kernels' gate
  blocks are centered once per call (`center_gates`), so the projections' per-gate means
  are zero by construction and no step computes one; `layer_norm` has a written-out
  gradient that keeps two tensors per step. Cells used on their own (`RNN(cell)`,
  stacked cells) run the same math one step at a time.
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
from normify.keras_internals import backend_module

# Cell config keys that belong to the cell as a Layer rather than to the recurrence; the
# drop-in layers leave them out of their flat config, as the stock layers do.
_CELL_LAYER_KEYS = ("name", "trainable", "dtype")


def _masked_matmul(inputs: Any, kernel: Any, masks: Any) -> Any:
    """`inputs·kernel`, with dropout masks: none, one for all gates, or one per gate.

    With one mask per gate (the stock `implementation=1`), gate g's block of the kernel
    multiplies `inputs * masks[g]`; the blocks are concatenated in gate order.
    """
    if masks is None:
        return ops.matmul(inputs, kernel)
    if not isinstance(masks, (list, tuple)):
        return ops.matmul(inputs * masks, kernel)
    blocks = ops.split(kernel, len(masks), axis=1)
    return ops.concatenate(
        [ops.matmul(inputs * mask, block) for mask, block in zip(masks, blocks, strict=True)],
        axis=-1,
    )


def layer_norm(values: Any, gamma: Any, epsilon: float, centered: bool = False) -> Any:
    """Per-gate layer normalization: `values` (..., gates * units), `gamma` (gates, units)
    or, for a single gate, (units,).

    `centered=True` says each gate block of `values` already has mean zero, because it is
    a product with a kernel whose gate blocks were centered (`center_gates`): then
    `(v - mean) = v` and the mean is neither computed nor differentiated.

    One reshape to (-1, gates, units), one mean and one variance over the last axis,
    `(v - mean) / sqrt(var + epsilon) * gamma`, in float32 when `values` is half precision.
    The gradient is written out (the standard layer-norm backward pass) rather than
    derived op by op: inside a recurrent step loop every intermediate that autodiff keeps
    is stored per time step, and this form keeps two, the normalized values and the
    inverse deviation.
    """
    dtype = keras.backend.standardize_dtype(values.dtype)
    stats_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
    values, gamma = ops.cast(values, stats_dtype), ops.cast(gamma, stats_dtype)
    return ops.cast(_layer_norm(values, gamma, epsilon, centered), dtype)


def center_gates(kernel: Any, gates: int) -> Any:
    """`kernel` (inputs, gates * units) minus, row by row, the mean of each gate block.

    Then `(v·kernel)`'s gate blocks are centered for every `v`:
    `v·center_gates(K) = v·K - mean_per_gate(v·K)`. Computing this once per call, outside
    the step loop, takes the mean and its subtraction out of every step.
    """
    inputs, columns = kernel.shape
    grouped = ops.reshape(kernel, (inputs, gates, columns // gates))
    grouped = grouped - ops.mean(grouped, axis=-1, keepdims=True)
    return ops.reshape(grouped, (inputs, columns))


def _layer_norm(values: Any, gamma: Any, epsilon: float, centered: bool) -> Any:
    # One gate (gamma of shape (units,)) needs no reshape: the statistics are over the
    # last axis as it is.
    grouped_shape = None if len(gamma.shape) == 1 else (-1, *gamma.shape)

    @ops.custom_gradient
    def normalize(x: Any, g: Any) -> tuple[Any, Any]:
        shape = ops.shape(x)
        grouped = x if grouped_shape is None else ops.reshape(x, grouped_shape)
        if not centered:
            grouped = grouped - ops.mean(grouped, axis=-1, keepdims=True)
        inverse = ops.rsqrt(ops.mean(ops.square(grouped), axis=-1, keepdims=True) + epsilon)
        normalized = grouped * inverse

        def grad(*args: Any, upstream: Any = None) -> tuple[Any, Any]:
            if upstream is None:
                (upstream,) = args
            if grouped_shape is not None:
                upstream = ops.reshape(upstream, grouped_shape)
            d_normalized = upstream * g
            d_x = d_normalized - normalized * ops.mean(
                d_normalized * normalized, axis=-1, keepdims=True
            )
            if not centered:
                d_x = d_x - ops.mean(d_normalized, axis=-1, keepdims=True)
            d_x = inverse * d_x
            leading = tuple(range(len(upstream.shape) - len(g.shape)))
            d_g = ops.sum(upstream * normalized, axis=leading)
            if grouped_shape is None:
                return d_x, d_g
            return ops.reshape(d_x, shape), d_g

        output = normalized * g
        return (output if grouped_shape is None else ops.reshape(output, shape)), grad

    return normalize(values, gamma)


def _gate_mask(masks: Any, gate: int) -> Any:
    return masks[gate] if isinstance(masks, (list, tuple)) else masks


class _LayerNormCellMixin:
    """Norm arguments, norm weights and the normalization itself, shared by the cells.

    Mixed in before the stock cell class, so `super()` reaches the stock cell.
    """

    # Gates per cell: how many `units`-wide blocks the projections hold.
    _gates: int = 1

    if TYPE_CHECKING:
        # The stock cell it is mixed into provides the rest (units, kernels, dropout...).
        def __getattr__(self, name: str) -> Any: ...

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

    def _gamma(self, gamma: Any, first: int = 0, blocks: int | None = None) -> Any:
        """Gate blocks first..first+blocks-1 of a gamma: (blocks, units), or (units,)."""
        blocks = self._gates - first if blocks is None else blocks
        units = self.units
        value = ops.copy(gamma)
        if blocks != self._gates:
            value = value[first * units : (first + blocks) * units]
        return value if blocks == 1 else ops.reshape(value, (blocks, units))

    def _dropout_on(self, rate: float, training: bool) -> bool:
        # The stock LSTM and GRU cells apply a dropout rate only below 1.
        return bool(training) and 0.0 < rate < 1.0

    def _input_bias(self) -> Any:
        """The bias added to the normalized input projection (None without a bias)."""
        return self.bias if self.use_bias else None

    def _input_side(self, inputs: Any, training: bool = False) -> Any:
        """`LN(x·W) + input bias`: one step (batch, features) or every step at once.

        Over a sequence (batch, time, features) the input dropout masks, drawn once per
        sequence from its first step as the stock layers do, apply to every time step:
        exactly what the step loop does with the masks the cell caches.
        """
        masks = None
        if self._dropout_on(self.dropout, training):
            first_step = inputs if len(inputs.shape) == 2 else inputs[:, 0, :]
            masks = self.get_dropout_mask(first_step)
            if len(inputs.shape) == 3:
                masks = (
                    [ops.expand_dims(m, 1) for m in masks]
                    if isinstance(masks, (list, tuple))
                    else ops.expand_dims(masks, 1)
                )
        kernel = center_gates(ops.convert_to_tensor(self.kernel), self._gates)
        projection = _masked_matmul(inputs, kernel, masks)
        projection = layer_norm(projection, self._gamma(self.input_gamma), self.epsilon, True)
        bias = self._input_bias()
        return projection if bias is None else projection + bias

    def _recurrent_masks(self, h_tm1: Any, training: bool) -> Any:
        """The recurrent dropout mask(s) for this call: None, one tensor or one per gate."""
        if not self._dropout_on(self.recurrent_dropout, training):
            return None
        return self.get_recurrent_dropout_mask(h_tm1)

    def _step_weights(self) -> dict[str, Any]:
        """What the step reads, as tensors: read once per call of the layer, outside the
        step loop, so the loop captures them instead of reading and storing them per step."""
        return {
            "recurrent_kernel": center_gates(ops.copy(self.recurrent_kernel), self._gates),
            "recurrent_gamma": self._gamma(self.recurrent_gamma),
        }

    def _recurrent_side(self, h_tm1: Any, masks: Any, kernel: Any, gamma: Any) -> Any:
        """`LN(h·U)` for the gate blocks that `kernel` (units, blocks * units, gate-centered)
        holds."""
        if isinstance(masks, (list, tuple)):
            masks = masks[: gamma.shape[0]]
        return layer_norm(_masked_matmul(h_tm1, kernel, masks), gamma, self.epsilon, True)

    def call(self, inputs: Any, states: Any, training: bool = False) -> Any:
        """One step: the input side, then the recurrence (`normalize=False`: the stock step)."""
        if not self.normalize:
            return super().call(inputs, states, training=training)  # type: ignore[misc]
        projected = self._input_side(inputs, training)
        return self._step(projected, states, self._step_weights(), training)

    def _step(self, projected: Any, states: Any, weights: dict[str, Any], training: bool) -> Any:
        """The recurrence, given this step's `LN(x·W) + input bias` and `_step_weights()`."""
        raise NotImplementedError

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

    def _step_weights(self) -> dict[str, Any]:
        return {
            **super()._step_weights(),
            "cell_gamma": self._gamma(self.cell_gamma, 0, 1),
            "cell_beta": ops.copy(self.cell_beta),
        }

    def _step(self, projected: Any, states: Any, weights: dict[str, Any], training: bool) -> Any:
        h_tm1, c_tm1 = states[0], states[1]
        masks = self._recurrent_masks(h_tm1, training)
        z = projected + self._recurrent_side(
            h_tm1, masks, weights["recurrent_kernel"], weights["recurrent_gamma"]
        )
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        c = f * c_tm1 + i * self.activation(z_c)
        o = self.recurrent_activation(z_o)
        c_out = layer_norm(c, weights["cell_gamma"], self.epsilon)
        h = o * self.activation(c_out + ops.cast(weights["cell_beta"], c.dtype))
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

    def _input_bias(self) -> Any:
        if not self.use_bias:
            return None
        return self.bias[0] if self.reset_after else self.bias

    def _step_weights(self) -> dict[str, Any]:
        kernel = ops.copy(self.recurrent_kernel)
        if self.reset_after:
            weights = super()._step_weights()
            if self.use_bias:
                weights["recurrent_bias"] = ops.copy(self.bias)[1]
            return weights
        # Update and reset gates first; the candidate's term needs r, so it is apart.
        units = self.units
        return {
            "recurrent_kernel": center_gates(kernel[:, : 2 * units], 2),
            "recurrent_gamma": self._gamma(self.recurrent_gamma, 0, 2),
            "candidate_kernel": center_gates(kernel[:, 2 * units :], 1),
            "candidate_gamma": self._gamma(self.recurrent_gamma, 2, 1),
        }

    def _step(self, projected: Any, states: Any, weights: dict[str, Any], training: bool) -> Any:
        nested = isinstance(states, (list, tuple))
        h_tm1 = states[0] if nested else states
        masks = self._recurrent_masks(h_tm1, training)
        x_z, x_r, x_h = ops.split(projected, 3, axis=-1)
        inner = self._recurrent_side(
            h_tm1, masks, weights["recurrent_kernel"], weights["recurrent_gamma"]
        )
        if self.reset_after:
            if self.use_bias:
                inner = inner + weights["recurrent_bias"]
            r_z, r_r, r_h = ops.split(inner, 3, axis=-1)
            z = self.recurrent_activation(x_z + r_z)
            r = self.recurrent_activation(x_r + r_r)
            candidate = r * r_h
        else:
            r_z, r_r = ops.split(inner, 2, axis=-1)
            z = self.recurrent_activation(x_z + r_z)
            r = self.recurrent_activation(x_r + r_r)
            h_h = h_tm1 if masks is None else h_tm1 * _gate_mask(masks, 2)
            candidate = layer_norm(
                ops.matmul(r * h_h, weights["candidate_kernel"]),
                weights["candidate_gamma"],
                self.epsilon,
                centered=True,
            )
        hh = self.activation(x_h + candidate)
        h = z * h_tm1 + (1 - z) * hh
        return h, [h] if nested else h

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

    def _dropout_on(self, rate: float, training: bool) -> bool:
        # The stock SimpleRNN cell applies any positive rate.
        return bool(training) and rate > 0.0

    def _step(self, projected: Any, states: Any, weights: dict[str, Any], training: bool) -> Any:
        nested = isinstance(states, (list, tuple))
        prev_output = states[0] if nested else states
        masks = self._recurrent_masks(prev_output, training)
        output = projected + self._recurrent_side(
            prev_output, masks, weights["recurrent_kernel"], weights["recurrent_gamma"]
        )
        if self.activation is not None:
            output = self.activation(output)
        return output, [output] if nested else output

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

    def inner_loop(
        self, sequences: Any, initial_state: Any, mask: Any, training: bool = False
    ) -> Any:
        """The input side for every time step at once, then the step loop on the rest.

        `LN(x·W) + input bias` does not depend on the recurrence, so it is one matmul and
        one normalization over the whole sequence (as the stock LSTM precomputes its input
        projection where it can); each step then computes only `LN(h·U)` (and the LSTM's
        `LN(c)`). Masks, `go_backwards`, `unroll` and the outputs are the backend loop's,
        exactly as in `keras.layers.RNN.inner_loop`. With `normalize=False` the stock
        loop runs the stock step.
        """
        cell = self.cell
        if not cell.normalize:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        copy_states = keras.backend.backend() == "torch" and self.stateful
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        projected = cell._input_side(sequences, training)

        def loop(projected: Any, initial_state: Any, mask: Any, weights: Any) -> Any:
            def step(inputs: Any, states: Any) -> tuple[Any, Any]:
                if copy_states:
                    # As the stock loop does: no in-place updates of tensors autograd needs.
                    states = [ops.copy(state) for state in states]
                output, new_states = cell._step(inputs, states, weights, training)
                if not isinstance(new_states, (list, tuple)):
                    new_states = [new_states]
                return output, new_states

            return backend_module().rnn(
                step,
                projected,
                initial_state,
                go_backwards=self.go_backwards,
                mask=mask,
                unroll=self.unroll,
                input_length=sequences.shape[1],
                zero_output_for_mask=self.zero_output_for_mask,
                return_all_outputs=self.return_sequences,
            )

        return loop(projected, initial_state, mask, cell._step_weights())

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
