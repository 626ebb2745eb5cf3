"""What tf.keras (TensorFlow 2.x, Keras 2.4 to 2.15, tf_keras) added to Keras 2's config
language: mixed-precision `Policy` objects, and raw TensorFlow operations saved as layers
(TensorFlowOpLayer here; `normify.formats.tfop` translates TFOpLambda). Module paths,
which tf_keras `.keras` files write, are Keras 2 rules (`normify.formats.keras2`): every
old config needs Keras 3's.
"""

from __future__ import annotations

from normify.formats.base import Context, Site, Stage


def dtype_policy(site: Site, context: Context) -> None:
    """tf.keras mixed precision wrote `Policy` objects; Keras 3 takes the policy name."""
    dtype = site.config.get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") == "Policy":
        name = (dtype.get("config") or {}).get("name")
        if isinstance(name, str):
            site.config["dtype"] = name
            context.repaired(
                "tf-keras-dtype-policy", site.path, f"dtype policy Policy({name!r}) -> {name!r}"
            )


def tensorflow_op_layer(site: Site, context: Context) -> None:
    """TensorFlow 2.0 to 2.3 saved raw TensorFlow calls as TensorFlowOpLayer: a TensorFlow
    graph node, which Keras 3 has no way to run."""
    if site.class_name == "TensorFlowOpLayer":
        node = site.config.get("node_def") or {}
        op = node.get("op") if isinstance(node, dict) else None
        raise context.refuse(
            site.path,
            f"TensorFlowOpLayer runs the raw TensorFlow op {op or 'unknown'!r}, which Keras 3 "
            "cannot load (re-save the model with TensorFlow 2.4 or newer, or write the op as a "
            "Keras layer)",
        )


ATTENTION_SHAPES = ("query_shape", "value_shape", "key_shape")


def attention_build_config(site: Site, context: Context) -> None:
    """tf.keras recorded as a MultiHeadAttention's build config only the shape it was first
    called on, the query's; Keras 3 builds one from the query's, value's and key's shapes,
    which tf.keras kept in the layer's config."""
    build = site.entry.get("build_config")
    if site.class_name != "MultiHeadAttention" or not isinstance(build, dict):
        return
    if "input_shape" not in build:
        return
    shapes = {key: site.config.get(key) for key in ATTENTION_SHAPES}
    if shapes["query_shape"] is not None and shapes["value_shape"] is not None:
        site.entry["build_config"] = {
            "shapes_dict": {key: shape for key, shape in shapes.items() if shape is not None}
        }
        text = "build config from the query, value and key shapes in its config"
    else:
        del site.entry["build_config"]
        text = "dropped its build config (the query's shape alone); the model's call builds it"
    context.repaired("tf-keras-attention-build", site.path, text)


STAGE = Stage("tf.keras", layer_rules=(dtype_policy, tensorflow_op_layer, attention_build_config))
