"""Static analysis: the arch, Keras and .tflite views agree, and they match what TF 2.21 emits.

The few int8 conversions (32 px, a few seconds each) are module fixtures shared by the tests;
224 px models are only built and walked, never converted.
"""

from __future__ import annotations

import functools
import json
import textwrap
from collections import Counter

import pytest

import search_spaces as s
from latency_models.analysis import (
    EDGETPU_SUPPORTED_OPS,
    ModelAnalysis,
    analyze_arch,
    analyze_keras,
    analyze_tflite,
    edgetpu_reason,
)

from conftest import PROXY_KWARGS

# Calibrating on one random image is right for latency-only conversions; TF warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

# Swish + squeeze-excite, then hard_swish (not on the Edge TPU) in stage 2, relu6 in the head.
SE_SWISH_HSWISH = ("v1-res32-cls10:stem-k3-s2-o8-swish:mbconv-r2-k3-s1-e2-o8-se0.25-swish,"
                   "fused_mbconv-r1-k3-s2-e2-o16-hard_swish:head-o32-relu6-d0.2")
# Reaches 1x1 with a residual and squeeze-excite there (converter quirks at proxy scale).
ONE_BY_ONE = ("v1-res32-cls10:stem-k3-s2-o8-relu:mbconv-r1-k3-s2-e2-o8-relu,mbconv-r1-k3-s2-e2-o8-relu,"
              "mbconv-r1-k3-s2-e2-o8-relu,mbconv-r2-k3-s2-e2-o16-se0.25-swish:head-o32-relu")


def _sample0() -> s.Arch:
    return s.get("efficientnet_edgetpu", **PROXY_KWARGS["efficientnet_edgetpu"]).sample(0)


def _convert(model) -> bytes:
    from latency_models.convert import to_int8_tflite

    return to_int8_tflite(model)


@pytest.fixture(scope="module")
def converted():
    """arch string -> (arch, keras model, int8 .tflite bytes), converted once per module."""
    cache: dict[str, tuple] = {}

    def get(text: str):
        if text not in cache:
            arch = _sample0() if text == "sample0" else s.Arch.from_string(text)
            model = s.build_model(arch)
            cache[text] = (arch, model, _convert(model))
        return cache[text]

    return get


def _mixed_model():
    """A Keras model of stock layers our builder never uses (not an arch)."""
    import keras
    from keras import layers as L

    x = inp = keras.Input((32, 32, 3), name="img")
    x = L.Rescaling(1 / 127.5, offset=-1, name="rescale")(x)
    x = L.ZeroPadding2D(1, name="pad")(x)                       # not SAME's (0, 1): a real PAD
    x = L.Conv2D(8, 3, strides=2, use_bias=False, name="c1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(max_value=6, name="r6")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r")(x)
    a = L.Conv2D(8, 1, activation="relu", name="ca")(x)
    b = L.Conv2D(8, 3, groups=2, padding="same", name="cg")(x)
    x = L.Add(name="add")([a, b])
    x = L.Activation("relu", name="addrelu")(x)
    c = L.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = L.Concatenate(name="cat")([x, c])
    x = L.MaxPooling2D(2, name="mp")(x)
    x = L.AveragePooling2D(2, name="ap")(x)
    x = L.BatchNormalization(name="bn3")(x)                     # after a pool: cannot fold
    y = L.Activation("sigmoid", name="sig")(x)
    x = L.Multiply(name="mul")([x, y])
    x = L.UpSampling2D(name="up")(x)                            # 5-D TILE: the CPU from here
    x = L.Activation("tanh", name="tanh")(x)
    x = L.Conv2D(8, 3, padding="same", activation="silu", name="cs")(x)
    x = L.BatchNormalization(name="bn4")(x)
    g = L.GlobalAveragePooling2D(name="gap")(x)
    f = L.Flatten(name="flat")(x)
    f = L.Dense(8, name="fd")(f)
    x = L.Concatenate(name="cat2")([g, f])
    x = L.Dense(16, activation="relu", name="d1")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.Dense(10, name="d2")(x)
    x = L.Softmax(name="sm")(x)
    return keras.Model(inp, x, name="mixed")


def _layout(a: ModelAnalysis, *, operand_order: bool = True) -> list[tuple]:
    return [(o.op_type, o.input_shapes, o.output_shape, o.kernel, o.stride, o.groups, o.depthwise,
             o.fused_activation, o.macs, o.input_ops if operand_order else tuple(sorted(o.input_ops)),
             o.edgetpu_supported) for o in a.ops]


# ------------------------------------------------------------------------------ arch source


def test_analyze_arch_imports_no_tensorflow():
    from conftest import heavy_modules_loaded_by

    code = textwrap.dedent("""
        import search_spaces as s
        from latency_models.analysis import analyze_arch
        sp = s.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5, num_classes=10)
        for i in range(5):
            assert analyze_arch(sp.sample(i)).total_macs > 0
        assert analyze_arch(s.reference("efficientnet_b0")).first_cpu_op is None
        assert analyze_arch("%s").first_cpu_op is not None
    """ % SE_SWISH_HSWISH)
    assert heavy_modules_loaded_by(code) == []


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "mnasnet_a1", "efficientnet_edgetpu_s"])
def test_arch_totals_agree_with_the_plan(name):
    arch = s.reference(name)
    a = analyze_arch(arch)
    layers = s.plan(arch)
    assert a.source == "arch" and a.input_shape == (1, 224, 224, 3)
    assert a.total_macs == s.count_macs(arch)
    assert a.keras_trainable_params == s.count_params(arch)
    # Folding turns each BN's gamma and beta into one bias per channel of its conv.
    folded = sum(ly.params for ly in layers if ly.op == "batch_norm") // 2
    assert a.total_params == s.count_params(arch) - folded
    # int8 weights, int32 biases: one bias per output channel of every conv and the classifier.
    biases = sum(ly.filters for ly in layers if ly.op in ("conv2d", "depthwise_conv2d", "dense"))
    assert a.total_param_bytes == a.total_params + 3 * biases
    assert a.first_cpu_op is None and a.ops_on_cpu == 0 and a.ops_on_tpu == len(a.ops)
    assert set(a.op_types) <= EDGETPU_SUPPORTED_OPS
    assert all(op.block for op in a.ops)


def test_arch_mobilenet_v2_is_300m_macs():
    a = analyze_arch(s.reference("mobilenet_v2"))
    assert a.total_macs == pytest.approx(300e6, rel=0.02)
    counts = Counter(a.op_types)
    assert counts == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1, "FULLY_CONNECTED": 1,
                      "SOFTMAX": 1}
    assert all(op.fused_activation == "RELU6" for op in a.ops if op.name.endswith("_act"))


def test_arch_is_cached_and_arguments_are_checked():
    arch = _sample0()
    assert analyze_arch(arch) is analyze_arch(arch)
    assert analyze_arch(arch.to_string()) is analyze_arch(arch)
    wider = analyze_arch(arch, input_shape=(64, 64, 3), num_classes=5)
    assert wider.input_shape == (1, 64, 64, 3) and wider.ops[-1].output_shape == (1, 5)
    assert wider.total_macs > analyze_arch(arch).total_macs
    with pytest.raises(ValueError, match="input_shape"):
        analyze_arch(arch, input_shape=(32, 32))
    with pytest.raises(ValueError, match="expected an Arch or arch string"):
        analyze_arch(42)


def test_hard_swish_starts_the_cpu_partition():
    a = analyze_arch(SE_SWISH_HSWISH)
    first = a.first_cpu_op
    assert first is not None and a.ops[first].op_type == "HARD_SWISH"
    assert a.ops[first].name == "block2a_expand_act" and a.ops[first].block == "block2a"
    assert a.unsupported == ((first, "HARD_SWISH", a.ops[first].reason),)
    assert "HARD_SWISH" in a.ops[first].reason and "Edge TPU" in a.ops[first].reason
    assert [op.device for op in a.ops] == ["tpu"] * first + ["cpu"] * (len(a.ops) - first)
    assert a.ops_on_tpu == first and a.ops_on_cpu == len(a.ops) - first
    # Later ops are CPU-placed though each could run on the Edge TPU by itself.
    assert all(op.edgetpu_supported and op.reason is None for op in a.ops[first + 1:])


# ------------------------------------------------------------------------------ three views agree


@pytest.mark.slow
@pytest.mark.parametrize("text", ["sample0", SE_SWISH_HSWISH, ONE_BY_ONE])
def test_arch_keras_and_tflite_agree(converted, text):
    arch, model, blob = converted(text)
    a, k, t = analyze_arch(arch), analyze_keras(model), analyze_tflite(blob)
    assert (a.source, k.source, t.source) == ("arch", "keras", "tflite")
    assert a.op_types == k.op_types == t.op_types
    assert _layout(a) == _layout(k) == _layout(t)
    assert a.total_macs == k.total_macs == t.total_macs == s.count_macs(arch)
    assert [op.block for op in a.ops] == [op.block for op in k.ops] == [op.block for op in t.ops]
    assert a.first_cpu_op == k.first_cpu_op == t.first_cpu_op
    assert a.peak_activation_bytes == k.peak_activation_bytes == t.peak_activation_bytes
    assert a.input_shape == k.input_shape == t.input_shape == (1, 32, 32, 3)
    # Keras reads the weights, so it knows the untrained classifier bias is zero and dropped by
    # the converter, exactly like the file; the arch view assumes a trained, non-zero bias.
    assert k.total_param_bytes == t.total_param_bytes and k.total_params == t.total_params
    classes = a.ops[-1].output_shape[-1]
    assert a.total_param_bytes - t.total_param_bytes == 4 * classes
    assert [o.param_bytes for o in k.ops] == [o.param_bytes for o in t.ops]


@pytest.mark.slow
def test_what_the_converter_emits(converted):
    """The TF 2.21 facts the arch and Keras views are built on (SE_SWISH_HSWISH as converted)."""
    _, _, blob = converted(SE_SWISH_HSWISH)
    t = analyze_tflite(blob)
    ops = t.ops
    types = t.op_types
    assert "QUANTIZE" not in types and "DEQUANTIZE" not in types  # int8 io
    assert {op.dtype for op in ops} == {"int8"}
    # swish = x * sigmoid(x): a plain CONV_2D (BN folded, no fused act), LOGISTIC, MUL(x, s).
    assert types[:3] == ("CONV_2D", "LOGISTIC", "MUL") and ops[0].fused_activation is None
    assert ops[2].input_ops == (0, 1)
    # squeeze-excite: MEAN (keepdims), reduce conv (+ its swish), expand conv, LOGISTIC, MUL.
    se = [op for op in ops if op.block == "block1a" and "_se_" in op.name]
    assert [op.op_type for op in se] == ["MEAN", "CONV_2D", "LOGISTIC", "MUL", "CONV_2D", "LOGISTIC", "MUL"]
    assert se[0].output_shape == (1, 1, 1, 16) and se[-1].output_shape == (1, 16, 16, 16)
    # hard_swish stays one HARD_SWISH op; relu6 fuses into the head conv; GAP -> MEAN;
    # Dense -> FULLY_CONNECTED (its all-zero bias dropped) + SOFTMAX; Dropout and BN vanish.
    assert types.count("HARD_SWISH") == 1
    head = [op for op in ops if op.block == "head"]
    assert [op.op_type for op in head] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    assert head[0].fused_activation == "RELU6" and head[1].output_shape == (1, 32)
    assert head[2].param_bytes == 32 * 10
    # Every conv carries an int32 bias (from the folded BN): weights + 4 bytes per channel.
    conv = ops[0]
    assert conv.kernel == (3, 3) and conv.stride == (2, 2) and conv.param_bytes == 3 * 3 * 3 * 8 + 4 * 8


@pytest.mark.slow
def test_one_by_one_quirks(converted):
    """At 1x1 a keepdims MEAN vanishes and a residual ADD reshapes its second operand to 1-D."""
    _, _, blob = converted(ONE_BY_ONE)
    t = analyze_tflite(blob)
    last = [op for op in t.ops if op.block == "block4b"]
    assert "MEAN" not in [op.op_type for op in last]
    add = next(op for op in last if op.op_type == "ADD")
    reshape = t.ops[add.input_ops[1]]
    assert reshape.op_type == "RESHAPE" and reshape.output_shape == (16,)
    assert reshape.index == reshape.input_ops[0] + 1  # placed right after its producer


@pytest.mark.slow
def test_stock_keras_layers_match_the_converter():
    model = _mixed_model()
    k, t = analyze_keras(model), analyze_tflite(_convert(model))
    assert k.op_types == t.op_types
    assert _layout(k) == _layout(t)
    assert (k.total_macs, k.total_params, k.total_param_bytes, k.peak_activation_bytes) == \
        (t.total_macs, t.total_params, t.total_param_bytes, t.peak_activation_bytes)
    assert k.first_cpu_op == t.first_cpu_op and k.unsupported == t.unsupported
    by_name = {op.name: op for op in k.ops}
    assert k.op_types[:3] == ("MUL", "ADD", "PAD") and k.ops[0].name == k.ops[1].name == "rescale"
    assert by_name["c1+bn1+r6"].fused_activation == "RELU6"
    assert by_name["cg"].groups == 2 and by_name["cg"].macs == 16 * 16 * 8 * 3 * 3 * 4
    assert [op.op_type for op in k.ops if op.name == "sep"] == ["DEPTHWISE_CONV_2D", "CONV_2D"]
    assert by_name["add+addrelu"].op_type == "ADD" and by_name["add+addrelu"].fused_activation == "RELU"
    assert by_name["bn3"].op_type == "MUL"  # a BN after a pool cannot fold (its zero offset adds nothing)
    first = k.ops[k.first_cpu_op]
    assert first.name == "up" and "5-D" in first.reason
    assert [op.op_type for op in k.ops if op.name in ("fd", "gap")] == ["FULLY_CONNECTED", "MEAN"]


@pytest.mark.slow
def test_float_tflite_runs_on_the_cpu(converted):
    import tensorflow as tf

    _, model, _ = converted(SE_SWISH_HSWISH)
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # no optimizations: float32
    t = analyze_tflite(blob)
    assert t.first_cpu_op == 0 and t.ops_on_tpu == 0 and t.ops_on_cpu == len(t.ops)
    assert len(t.unsupported) == len(t.ops)
    assert {op.dtype for op in t.ops} == {"float32"}
    hswish = next(op for op in t.ops if op.op_type == "HARD_SWISH")
    assert "not supported" in hswish.reason
    assert all("float32" in op.reason for op in t.ops if op.op_type != "HARD_SWISH")
    # float32 parameters take 4 bytes each; the graph is the int8 one.
    assert t.total_param_bytes == 4 * t.total_params
    assert t.op_types == analyze_arch(SE_SWISH_HSWISH).op_types


# ------------------------------------------------------------------------------ Keras models


def test_keras_mobilenet_v2_224():
    import keras

    k = analyze_keras(keras.applications.MobileNetV2(weights=None))
    assert k.total_macs == pytest.approx(300e6, rel=0.02)
    assert k.keras_trainable_params == 3_504_872
    # After folding 17,056 BN channels into biases and dropping the untrained zero FC bias.
    assert k.total_params == 3_504_872 - 17_056 - 1000 == pytest.approx(3.5e6, rel=0.01)
    assert k.first_cpu_op is None
    # Its ZeroPadding2D((0, 1), (0, 1)) + VALID stride-2 convs become SAME convs: no PAD left.
    assert "PAD" not in k.op_types
    assert Counter(k.op_types) == {"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "ADD": 10, "MEAN": 1,
                                   "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    # Our reference is the same network; only the residual ADDs list their operands the other way.
    arch = analyze_arch(s.reference("mobilenet_v2"))
    assert _layout(arch, operand_order=False) == _layout(k, operand_order=False)
    assert arch.total_macs == k.total_macs


def test_keras_resnet50_224():
    import keras
    from keras import layers as L

    model = keras.applications.ResNet50(weights=None)
    k = analyze_keras(model)
    # Counted independently from the Keras layers: Keras's ResNet50 is v1 (stride in the first
    # 1x1 conv), 3.86 GMACs; the often quoted 4.1 G is torchvision's v1.5.
    expected = 0
    for ly in model.layers:
        if isinstance(ly, L.Conv2D):
            _, h, w, c = ly.output.shape
            expected += h * w * c * ly.kernel_size[0] * ly.kernel_size[1] * ly.input.shape[-1]
        elif isinstance(ly, L.Dense):
            expected += ly.input.shape[-1] * ly.units
    assert k.total_macs == expected == pytest.approx(3.86e9, rel=0.01)
    counts = Counter(k.op_types)
    assert counts["CONV_2D"] == 53 and counts["ADD"] == 16 and counts["PAD"] == 2 and counts["MAX_POOL_2D"] == 1
    assert "MUL" not in counts  # every BN folded
    assert all(op.fused_activation == "RELU" for op in k.ops if op.op_type == "ADD")
    assert k.first_cpu_op is None
    assert k.keras_trainable_params == 25_583_592


def test_keras_nested_and_shared_models():
    # (Layers with no rule, such as a Lambda, are tested with the converter lowering at the end.)
    import keras
    from keras import layers as L

    block = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same", activation="relu")])
    inp = keras.Input((8, 8, 4))
    shared = analyze_keras(keras.Model(inp, block(block(inp))))
    assert shared.op_types == ("CONV_2D", "CONV_2D") and [op.input_ops for op in shared.ops] == [(-1,), (0,)]

    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False)
    inp = keras.Input((32, 32, 3))
    y = L.GlobalAveragePooling2D()(base(L.Rescaling(1 / 255.0)(inp)))
    nested = analyze_keras(keras.Model(inp, L.Dense(5)(y)))
    inner = analyze_keras(base)
    # The converter folds the Rescaling's scalar MUL into the stem conv it feeds.
    assert nested.op_types == (*inner.op_types, "MEAN", "FULLY_CONNECTED")
    assert "rescaling" in nested.ops[0].name and nested.ops[0].op_type == "CONV_2D"
    assert nested.total_macs == inner.total_macs + 1280 * 5


def test_keras_dynamic_shapes_and_batch():
    import keras
    from keras import layers as L

    inp = keras.Input((None, None, 3))
    a = analyze_keras(keras.Model(inp, L.Conv2D(2, 3)(inp)))
    assert a.ops[0].input_shapes == ((1, -1, -1, 3),) and "dynamic shape" in a.ops[0].reason

    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(2)])
    assert analyze_keras(model).op_types == ("CONV_2D", "RESHAPE", "FULLY_CONNECTED")
    # TF's own from_keras_model keeps Keras 3's run-time shape arithmetic (int32 -> CPU).
    d = analyze_keras(model, dynamic_batch=True)
    assert d.op_types == ("CONV_2D", "SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE", "FULLY_CONNECTED")
    assert d.first_cpu_op == 1 and "batch_size=1" in d.ops[1].reason


def test_keras_bad_input():
    import keras
    from keras import layers as L

    with pytest.raises(ValueError, match="expected a keras.Model, got str"):
        analyze_keras("model.keras")
    with pytest.raises(ValueError, match="no static graph"):
        analyze_keras(keras.Sequential([L.Dense(3)]))


# ------------------------------------------------------------------------------ .tflite input


@pytest.mark.slow
def test_tflite_bad_input(converted, tmp_path):
    _, _, blob = converted("sample0")
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    assert analyze_tflite(path).op_types == analyze_tflite(blob).op_types
    assert analyze_tflite(str(path)).model_name == "m.tflite"
    with pytest.raises(ValueError, match="not a TFLite model .*TFL3"):
        analyze_tflite(b"")
    with pytest.raises(ValueError, match="not a TFLite model"):
        analyze_tflite(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="corrupt"):
        analyze_tflite(b"\x00\x00\x00\x00TFL3" + b"\xff" * 200)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        analyze_tflite(blob[: len(blob) // 3])
    with pytest.raises(ValueError, match="does not exist"):
        analyze_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="expected .tflite bytes or a path, got int"):
        analyze_tflite(3)


# ------------------------------------------------------------------------------ rules and outputs


def test_edgetpu_reason_rules():
    conv = ((1, 8, 8, 4), (1, 8, 8, 4))
    assert edgetpu_reason("CONV_2D", conv, ["int8", "int8"]) is None
    assert "not supported" in edgetpu_reason("HARD_SWISH", conv)
    assert "not supported" in edgetpu_reason("DEQUANTIZE", conv)
    assert "float32" in edgetpu_reason("CONV_2D", conv, ["float32", "float32"])
    assert "int32" in edgetpu_reason("RESHAPE", conv, ["int8", "int32"])
    assert "dynamic" in edgetpu_reason("CONV_2D", ((1, -1, 8, 4),))
    assert edgetpu_reason("CONV_2D", ((-1, 8, 8, 4),)) is None  # a dynamic batch compiles (batch 1)
    assert "5-D" in edgetpu_reason("RESHAPE", ((1, 2, 1, 4, 4),))
    assert "3 innermost" in edgetpu_reason("ADD", ((2, 8, 8, 4),))
    assert "16,000" in edgetpu_reason("SOFTMAX", ((1, 20000),))
    assert edgetpu_reason("SOFTMAX", ((1, 1000),)) is None


def test_peak_activation_bytes():
    # stem conv 32x32x3 -> 16x16x8, conv, head 1x1 conv, GAP, dense: a chain (noskip), so the
    # peak is the largest input + output of one op, the stem's.
    a = analyze_arch("v1-res32-cls10:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu-noskip:head-o8-relu")
    assert a.peak_activation_bytes == 32 * 32 * 3 + 16 * 16 * 8
    # With residuals the block input stays alive across the block.
    for arch in (_sample0(), s.Arch.from_string(SE_SWISH_HSWISH)):
        b = analyze_arch(arch)
        byte = {-1: 32 * 32 * 3} | {op.index: op.activation_bytes for op in b.ops}
        pairs = max(sum(byte[i] for i in op.input_ops) + op.activation_bytes for op in b.ops)
        assert pairs <= b.peak_activation_bytes <= sum(byte.values())
    se = analyze_arch(SE_SWISH_HSWISH)
    # In the SE block of block1a the excite MUL reads the 16x16x16 features kept alive across the
    # squeeze branch, and the block input (16x16x8) is kept for the residual ADD.
    assert se.peak_activation_bytes >= 2 * 16 * 16 * 16 + 16 * 16 * 8


def test_outputs_for_json_csv_and_cli():
    a = analyze_arch(SE_SWISH_HSWISH)
    d = json.loads(json.dumps(a.to_dict()))
    assert d["source"] == "arch" and d["first_cpu_op"] == a.first_cpu_op and len(d["ops"]) == len(a.ops)
    assert d["ops"][0]["output_shape"] == [1, 16, 16, 8] and d["unsupported"][0][1] == "HARD_SWISH"
    assert "ops" not in a.to_dict(with_ops=False)
    rows = a.to_rows()
    assert len(rows) == len(a.ops) and rows[0]["output_shape"] == "1x16x16x8" and rows[0]["kernel"] == "3x3"
    assert all(isinstance(v, (str, int, bool)) for row in rows for v in row.values())
    table = a.format_table()
    assert "HARD_SWISH" in table and "block2a_expand_act" in table
    assert f"CPU fall-back from op #{a.first_cpu_op} HARD_SWISH" in table
    assert f"MACs: {a.total_macs:,}" in table
    assert "every op is supported" in analyze_arch(_sample0()).format_table()


# ============================================================================== layers with no rule
# Layers the walker has no rule for (a Lambda, a custom layer, a stock layer with an unlisted
# activation, a subclassed model) are lowered by the TFLite converter itself; what even that
# cannot lower is assumed to run on the CPU and reported, up to the CLI. Models are 8-16 px
# with a few channels, so each helper conversion takes well under a second.


@functools.lru_cache(maxsize=1)
def _custom_layers():
    """Two custom layers, registered so a saved .keras model loads (defined lazily: keras)."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="nas_tests")
    class ScaleSum(keras.layers.Layer):
        """InceptionResNetV2's CustomScaleLayer: inputs[0] + inputs[1] * scale."""

        def __init__(self, scale, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, inputs):
            return inputs[0] + inputs[1] * self.scale

        def get_config(self):
            return {**super().get_config(), "scale": self.scale}

    @keras.saving.register_keras_serializable(package="nas_tests")
    class HostOnly(keras.layers.Layer):
        """Python code in the graph (PyFunc): no TFLite builtin can run it."""

        def call(self, x):
            y = tf.numpy_function(lambda v: v * 2.0, [x], tf.float32)
            y.set_shape(x.shape)
            return y

    return ScaleSum, HostOnly


def _host_only_model():
    import keras
    from keras import layers as L

    _, HostOnly = _custom_layers()
    inp = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = HostOnly(name="host")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    return keras.Model(inp, x, name="with_host_op")


def by_type(a: ModelAnalysis, op_type: str) -> list:
    return [op for op in a.ops if op.op_type == op_type]


@pytest.mark.slow
def test_custom_scale_layers_are_lowered_by_the_converter(monkeypatch):
    import keras
    from keras import layers as L

    import latency_models.analysis.converter as analysis
    import latency_models.convert as convert

    ScaleSum, _ = _custom_layers()
    inp = keras.Input((16, 16, 3))
    x = L.Lambda(lambda t: t * 2.0, name="twice")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c0")(x)
    up = L.Conv2D(8, 1, activation="relu", name="up1")(x)       # its relu keeps the MUL apart
    x = ScaleSum(0.17, name="scale1")([x, up])
    x = L.Activation("relu", name="act1")(x)
    up = L.Conv2D(8, 1, name="up2")(x)                           # a bare conv absorbs the MUL
    x = ScaleSum(0.17, name="scale2")([x, up])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, L.Dense(4, name="fc")(x))

    calls = []
    real = convert.to_int8_tflite
    monkeypatch.setattr(analysis, "_LOWERINGS", analysis.OrderedDict())
    monkeypatch.setattr(convert, "to_int8_tflite", lambda m, *a, **kw: calls.append(m.name) or real(m, *a, **kw))
    k = analyze_keras(model)
    # One conversion per distinct layer: the two scale layers share class, config and shapes.
    assert len(calls) == 2
    monkeypatch.undo()

    t = analyze_tflite(_convert(model))
    assert k.op_types == t.op_types
    assert _layout(k) == _layout(t)
    assert (k.total_macs, k.total_params, k.total_param_bytes, k.peak_activation_bytes) == \
        (t.total_macs, t.total_params, t.total_param_bytes, t.peak_activation_bytes)
    assert k.fully_on_edgetpu and k.assumed_cpu == ()
    assert k.converted_layers == ("twice", "scale1", "scale2")
    assert [op.op_type for op in k.ops if "scale1" in op.name] == ["MUL", "ADD"]
    assert [(op.op_type, op.name) for op in k.ops if "scale2" in op.name] == [("CONV_2D", "up2+scale2"),
                                                                             ("ADD", "scale2")]
    assert k.ops[0].name == "twice+c0" and k.ops[0].op_type == "CONV_2D"  # x * 2 folds into the conv
    assert by_type(k, "ADD")[0].fused_activation == "RELU"               # act1 fuses into scale1's ADD
    assert all(op.block == "" and op.device == "tpu" for op in k.ops)
    # The model the user passed is unchanged: no node left behind by the one-layer models.
    assert all(len(ly._inbound_nodes) == 1 for ly in model.layers[1:])


@pytest.mark.slow
def test_converted_layer_keeps_the_edgetpu_verdicts():
    """A stock layer with an activation the table lacks (selu) is converted whole, and its
    EXP/GREATER/SELECT stay unsupported with the converter's reasons, as in the full model."""
    import keras
    from keras import layers as L

    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="selu", name="c1")(inp)
    model = keras.Model(inp, L.Conv2D(4, 1, name="c2")(x))
    k, t = analyze_keras(model), analyze_tflite(_convert(model))
    assert k.op_types == t.op_types and "EXP" in k.op_types
    assert k.first_cpu_op == t.first_cpu_op == 1
    assert k.unsupported == t.unsupported and "EXP is not supported" in " ".join(r for _, _, r in k.unsupported)
    assert k.converted_layers == ("c1",) and k.assumed_cpu == ()
    assert k.total_param_bytes == t.total_param_bytes


@pytest.mark.slow
def test_layer_that_cannot_be_lowered_is_assumed_on_the_cpu_and_reported(caplog):
    import logging

    from latency_models import Target
    from latency_models.edgetpu.model_source import EdgeTPUModelSource

    model = _host_only_model()
    k = analyze_keras(model)
    assert k.op_types == ("CONV_2D", "UNKNOWN", "CONV_2D") and k.first_cpu_op == 1
    ((name, cls, reason),) = k.assumed_cpu
    assert (name, cls) == ("host", "HostOnly")
    assert "conversion failed" in reason and "PyFunc" in reason and "\n" not in reason
    assert k.ops[1].reason == f"unknown layer type HostOnly: {reason}" and k.ops[1].device == "cpu"
    d = json.loads(json.dumps(k.to_dict(with_ops=False)))
    assert d["assumed_cpu"] == [["host", "HostOnly", reason]] and d["converted_layers"] == []
    assert "warning: assumed to run on the CPU (no TFLite lowering): host (HostOnly)" in k.format_table()

    src = EdgeTPUModelSource()
    with caplog.at_level(logging.WARNING, logger="latency_models.edgetpu.model_source"):
        r = src.measure(Target(model))
    assert r.details["assumed_cpu_layers"] == [f"host (HostOnly): {reason}"]
    warnings = [rec for rec in caplog.records if rec.name == "latency_models.edgetpu.model_source"]
    assert len(warnings) == 1 and "with_host_op" in warnings[0].getMessage() and "host (HostOnly)" in \
        warnings[0].getMessage()
    # Nothing assumed: an empty list, and no warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="latency_models.edgetpu.model_source"):
        assert src.measure(Target(SE_SWISH_HSWISH)).details["assumed_cpu_layers"] == []
    assert not [rec for rec in caplog.records if rec.name == "latency_models.edgetpu.model_source"]


@pytest.mark.slow
def test_cli_predict_warns_about_layers_assumed_on_the_cpu(tmp_path, capsys):
    from nas.cli import main

    path = tmp_path / "model.keras"
    _host_only_model().save(path)
    code = main(["latency", "predict", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "warning: assumed to run on the CPU (no TFLite lowering): host (HostOnly): " in err
    assert "assumed_cpu_layers 1 (see the warnings)" in out and "latency_ms" in out

    code = main(["latency", "predict", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "warning: assumed to run on the CPU" in err
    (layer,) = json.loads(out)["details"]["assumed_cpu_layers"]
    assert layer.startswith("host (HostOnly): ")


def _tiny_subclassed(name: str):
    import keras
    from keras import layers as L

    class Tiny(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")
            self.pool = L.GlobalAveragePooling2D(name="gap")
            self.fc = L.Dense(3, name="fc")

        def call(self, x):
            return self.fc(self.pool(self.conv(x)))

    return Tiny(name=name)


@pytest.mark.slow
# Keras warns that build() marks a model without a build method as built; that is the point here.
@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer:UserWarning")
def test_built_subclassed_model_is_analysed_through_the_converter():
    import keras
    import numpy as np

    called = _tiny_subclassed("called")
    called(np.zeros((2, 16, 16, 3), "float32"))  # built by a call (batch 2: analysed at batch 1)
    built = _tiny_subclassed("built")
    built.build((None, 16, 16, 3))
    for model in (called, built):
        a = analyze_keras(model)
        assert a.source == "keras" and a.model_name == model.name and a.converted_layers == (model.name,)
        assert a.op_types == ("CONV_2D", "MEAN", "FULLY_CONNECTED") and a.fully_on_edgetpu
        assert [op.name for op in a.ops[:2]] == ["conv", "gap"]  # its own layers, not the wrapper
        assert a.input_shape == (1, 16, 16, 3) and a.total_macs == 16 * 16 * 4 * 27 + 4 * 3
        assert a.keras_trainable_params == model.count_params() == 3 * 3 * 3 * 4 + 4 + 4 * 3 + 3
        assert a.assumed_cpu == () and len(model._inbound_nodes) == 0
    # Used as a layer of a functional model, it is one layer with no rule: converted alone.
    inp = keras.Input((16, 16, 3))
    outer = analyze_keras(keras.Model(inp, called(inp)))
    assert outer.op_types == ("CONV_2D", "MEAN", "FULLY_CONNECTED") and outer.converted_layers == ("called",)


def test_unbuilt_subclassed_model_is_refused_in_one_line():
    model = _tiny_subclassed("never_called")
    with pytest.raises(ValueError, match=r"'never_called' \(Tiny\) has no static graph and its input shape is "
                                         r"unknown: call it once on an input \(model\(x\)\) or build it") as e:
        analyze_keras(model)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_inception_resnet_v2_runs_on_the_edgetpu():
    """Its 40 CustomScaleLayers become the converter's MUL/ADD: all on the Edge TPU (with the
    old UNKNOWN op everything after the first ran on the CPU, predicted ~11x too slow)."""
    import keras

    from latency_models.edgetpu.model_source import EdgeTPUModelSource

    model = keras.applications.InceptionResNetV2(weights=None, input_shape=(75, 75, 3))
    a = analyze_keras(model)
    assert a.fully_on_edgetpu and a.assumed_cpu == () and len(a.converted_layers) == 40
    assert "UNKNOWN" not in a.op_types
    ms = EdgeTPUModelSource().predict_analysis(a).latency_ms
    # Plausible: at 75 px the 56 MB of int8 weights are streamed over USB 3 and compute is small;
    # Coral measured the streaming-bound Inception v4 (42.9 MB int8) at 85 ms (shared measurements),
    # so about 85 * 56 / 42.9 = 111 ms.
    plausible = 85.0 * a.total_param_bytes / 42.9e6
    assert plausible / 3 < ms < plausible * 3, (ms, plausible)
