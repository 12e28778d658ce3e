"""`advseg import-onnx` and `advseg export --format onnx`: a network from elsewhere carded like
ours, and ours served by ONNX Runtime; every number checked against ONNX Runtime itself."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper
from onnx_graphs import model_of, unet
from support import fails_cleanly

from keras_advseg.cli import main
from keras_advseg.data import MODALITIES
from keras_advseg.data.prepare import load_prepared
from keras_advseg.export import load_model, load_source
from keras_advseg.inference import Preprocessing

ORDER = ("flair", "t1", "t1gd", "t2")  # the ONNX model's channels: not ours


def runtime(path, x_ours):
    """ONNX Runtime on our (B, X, Y, Z, 4) input, moved to the model's order and layout."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    moved = x_ours[..., [MODALITIES.index(m) for m in ORDER]].transpose(0, 4, 1, 2, 3)
    return session.run(None, {"image": np.ascontiguousarray(moved)})[0].transpose(0, 2, 3, 4, 1)


@pytest.fixture(scope="module")
def onnx_files(prepared_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    onnx.save(unet(np.random.default_rng(0), size=16), root / "logits.onnx")
    onnx.save(unet(np.random.default_rng(1), size=16, outputs=3), root / "regions.onnx")
    preprocessing = Preprocessing.from_prepared(load_prepared(prepared_dir)).to_json()
    (root / "preprocessing.json").write_text(json.dumps(preprocessing))
    return root


def imported(onnx_files, name, *extra):
    out = onnx_files / f"{name}.keras"
    args = ["import-onnx", onnx_files / f"{name}.onnx", "--out", out]
    args += ["--preprocessing", onnx_files / "preprocessing.json", "--modalities", ",".join(ORDER)]
    result = CliRunner().invoke(main, [str(a) for a in (*args, *extra)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_an_imported_network_equals_onnx_runtime_and_every_command_takes_it(
    onnx_files, prepared_dir, tmp_path, new_store, monkeypatch
):
    out, printed = imported(onnx_files, "logits")
    assert "outputs within" in printed and "opset 17" in printed
    model = load_model(out)  # safe mode: the converted graph is plain configuration
    x = np.random.default_rng(5).normal(size=(2, 16, 16, 16, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(model(x)), runtime(onnx_files / "logits.onnx", x), rtol=1e-4, atol=1e-4
    )
    source = load_source(out)
    assert source["sha256"] == hashlib.sha256((onnx_files / "logits.onnx").read_bytes()).hexdigest()
    assert source["opset"] == 17 and source["modalities"] == list(ORDER)
    checked = source["checked"]
    assert checked["max_output_difference"] <= checked["tolerance"]
    assert checked["gradient_relative_error"] <= checked["gradient_tolerance"]
    # a full card at a test-sized plan: every axis runs on it, and its provenance names the
    # ONNX file it came from, in the published schema
    import jsonschema

    from keras_advseg.workflows import card as card_module
    from keras_advseg.workflows.card.schema import SCHEMA_FILE

    tiny = card_module.CardPlan(
        "quick", 1, (0.05,), 1, ("pgd-dice",), ("missing-sequence",), (5,), (0.25,), 60, 5, 1
    )
    monkeypatch.setitem(card_module.CARD_PLANS, "quick", tiny)
    args = ["card", str(out), "--data", str(prepared_dir), "--out", str(tmp_path / "card")]
    result = CliRunner().invoke(main, [*args, "--tracking-uri", new_store(tmp_path)])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    jsonschema.validate(card, json.loads(SCHEMA_FILE.read_text()))
    assert card["provenance"]["model"]["source"] == source
    assert {e["axis"] for e in card["results"]} >= {"clean", "worst", "corruptions", "certified"}
    # served as a SavedModel too: the converted graph traces into TensorFlow's own format
    result = CliRunner().invoke(main, ["export", str(out), str(tmp_path / "served")])
    assert result.exit_code == 0, result.output
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "served"))
    probabilities = served.signatures["serve"](image=tf.constant(x[:1]))["probabilities"].numpy()
    scores = np.asarray(model(x[:1]), np.float64)
    softmax = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(probabilities, softmax / softmax.sum(-1, keepdims=True), atol=1e-5)
    with pytest.raises(jsonschema.ValidationError):  # the source's digest is checked
        bad = {**card["provenance"]["model"], "source": {**source, "sha256": "x"}}
        jsonschema.validate(
            {**card, "provenance": {**card["provenance"], "model": bad}},
            json.loads(SCHEMA_FILE.read_text()),
        )


def test_region_outputs_become_cumulative_class_scores_that_threshold_as_the_regions(onnx_files):
    """Three sigmoid channels (MONAI's order tc, wt, et): the imported model's scores are
    background 0, oedema l_WT, necrotic core l_WT + l_TC, enhancing l_WT + l_TC + l_ET (the
    log-odds of ONNX Runtime's own outputs), and where the regions are nested their argmax is
    the label that thresholding each region at 0.5 gives."""
    out, _ = imported(onnx_files, "regions", "--outputs", "regions", "--output-order", "tc,wt,et")
    x = np.random.default_rng(6).normal(size=(1, 16, 16, 16, 4)).astype("float32")
    tc, wt, et = np.moveaxis(runtime(onnx_files / "regions.onnx", x).astype(np.float64), -1, 0)
    inside = np.all([(p > 1e-5) & (p < 1 - 1e-5) for p in (wt, tc, et)], axis=0)  # unclipped
    assert inside.mean() > 0.5
    odds = [np.log(p[inside]) - np.log1p(-p[inside]) for p in (wt, tc, et)]
    expected = np.stack([0 * odds[0], odds[0] + odds[1], odds[0], sum(odds)], axis=-1)
    scores = np.asarray(load_model(out)(x), np.float64)
    # float32 rounding of p near 1 is amplified by 1 / (p (1 - p)) in the log-odds
    np.testing.assert_allclose(scores[inside], expected, rtol=5e-4, atol=2e-3)
    thresholded = np.select([et > 0.5, tc > 0.5, wt > 0.5], [3, 1, 2], 0)  # ET, NCR, ED, bg
    nested = (wt >= tc) & (tc >= et)
    assert nested.sum() > 100
    np.testing.assert_array_equal(np.argmax(scores, -1)[nested], thresholded[nested])


def test_what_cannot_be_mapped_or_converted_is_refused_in_one_line(
    onnx_files, tmp_path, monkeypatch
):
    common = ["--preprocessing", onnx_files / "preprocessing.json"]

    def one_node(name, op, shape):
        """An ONNX file of one ``op`` node whose input and output are ``shape``."""
        path = tmp_path / f"{name}.onnx"
        node = helper.make_node(op, ["image"], ["y"])
        onnx.save(model_of([node], [("image", shape)], ("y", shape)), path)
        return path

    three = one_node("three", "Relu", [1, 3, 16, 16, 16])
    fails_cleanly(
        ["import-onnx", three, "--out", tmp_path / "m.keras", *common],
        contains=("the model's input is (1, 3, 16, 16, 16)", "four sequences"),
    )
    fails_cleanly(
        [
            "import-onnx",
            onnx_files / "logits.onnx",
            "--out",
            tmp_path / "m.keras",
            *common,
            "--outputs",
            "regions",
        ],
        contains=("the model's output is (N, 4, 16, 16, 16)", "expected 3 regions channels"),
    )
    erf = one_node("erf", "Erf", ["N", 4, 16, 16, 16])
    fails_cleanly(
        ["import-onnx", erf, "--out", tmp_path / "m.keras", *common],
        contains=("unsupported ONNX operators: Erf",),
    )
    fixed = one_node("fixed", "Relu", [1, 4, 16, 16, 16])
    fails_cleanly(
        ["import-onnx", fixed, "--out", tmp_path / "m.keras", *common],
        contains=("the model's batch is fixed at 1", "dynamic_axes"),
    )
    smaller = one_node("smaller", "Relu", ["N", 4, 8, 8, 8])
    fails_cleanly(
        ["import-onnx", smaller, "--out", tmp_path / "m.keras", *common],
        contains=("the preprocessing's shape is (16, 16, 16)",),
    )
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    fails_cleanly(
        ["import-onnx", tmp_path / "broken.onnx", "--out", tmp_path / "m.keras", *common],
        contains=("broken.onnx: not a valid ONNX model",),
    )
    fails_cleanly(
        [
            "import-onnx",
            onnx_files / "logits.onnx",
            "--out",
            tmp_path / "m.keras",
            *common,
            "--modalities",
            "t1,t1,t2,flair",
        ],
        contains=("modalities must name each of",),
    )
    mine = tmp_path / "mine.keras"
    mine.write_bytes(b"the user's own file")
    fails_cleanly(
        ["import-onnx", onnx_files / "logits.onnx", "--out", mine, *common],
        contains=("exists and is not a model this command wrote",),
    )
    assert mine.read_bytes() == b"the user's own file"
    # a converter that got an operator wrong is caught by the check against ONNX Runtime
    from keras_advseg.onnx import operators

    def refused_after_progress(message):
        """Progress lines, then the refusal as the last line, exit 2 and no traceback."""
        args = ["import-onnx", onnx_files / "logits.onnx", "--out", tmp_path / "m.keras", *common]
        result = CliRunner().invoke(main, [str(a) for a in args])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert lines[0].startswith("converted") and message in lines[-1], result.output
        assert "the import is refused" in lines[-1]

    monkeypatch.setitem(operators.OPERATORS, "LeakyRelu", operators.OPERATORS["Relu"])
    refused_after_progress("differs from ONNX Runtime by up to")
    assert not (tmp_path / "m.keras").exists()
    # and one whose forward pass is right but whose gradient is not, by the gradient check
    from keras import ops

    monkeypatch.setitem(
        operators.OPERATORS,
        "LeakyRelu",
        lambda inputs, attrs, opset, node: [ops.stop_gradient(ops.leaky_relu(inputs[0], 0.01))],
    )
    refused_after_progress("input gradients differ from finite differences")
    # a 2-D graph, and a shape computed in the graph that cannot be fixed
    flat = one_node("flat", "Relu", [1, 4, 16, 16])
    fails_cleanly(
        ["import-onnx", flat, "--out", tmp_path / "m.keras", *common],
        contains=("the model's input is (1, 4, 16, 16)", "a 3-D volume"),
    )
    dynamic = model_of(
        [
            helper.make_node("Shape", ["image"], ["s"]),
            helper.make_node("Cast", ["s"], ["f"], to=1),
            helper.make_node("Div", ["f", "f"], ["ones"]),
            helper.make_node("Resize", ["image", "", "ones"], ["y"], mode="nearest"),
        ],
        [("image", ["N", 4, 16, 16, 16])],
        ("y", ["N", 4, 16, 16, 16]),
    )
    onnx.save(dynamic, tmp_path / "dynamic.onnx")
    fails_cleanly(
        ["import-onnx", tmp_path / "dynamic.onnx", "--out", tmp_path / "m.keras", *common],
        contains=("Resize scales known only when the graph runs",),
    )


def test_export_writes_an_onnx_model_onnx_runtime_serves_as_ours(models, tmp_path):
    result = CliRunner().invoke(
        main, ["export", str(models / "a.keras"), str(tmp_path / "served"), "--format", "onnx"]
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "served" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    x = np.random.default_rng(7).normal(size=(2, 16, 16, 16, 4)).astype("float32")
    logits = np.asarray(load_model(models / "a.keras")(x), np.float64)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    fails_cleanly(
        ["export", models / "a.keras", tmp_path / "served", "--format", "onnx"],
        contains=("already exists",),
    )
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["model.onnx"]

    # and back: the exported model imported gives the same outputs and the same FGSM example
    (tmp_path / "preprocessing.json").write_text(
        json.dumps(Preprocessing((16, 16, 16), False, 2, 2, "volume").to_json())
    )
    back = tmp_path / "back.keras"
    args = ["import-onnx", str(path), "--out", str(back), "--outputs", "probabilities"]
    args += ["--layout", "channels-last", "--preprocessing", str(tmp_path / "preprocessing.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    imported = load_model(back)
    again = np.asarray(imported(x), np.float64)
    again = np.exp(again) / np.exp(again).sum(-1, keepdims=True)
    np.testing.assert_allclose(again, expected, atol=1e-5)
    from keras_advseg.attacks import fgsm
    from keras_advseg.data import one_hot_labels

    labels = one_hot_labels(np.argmax(expected, -1).choose([0, 1, 2, 4])).numpy()
    ours = np.asarray(fgsm(load_model(models / "a.keras"), x, labels, eps=0.05))
    theirs = np.asarray(fgsm(imported, x, labels, eps=0.05))
    assert np.mean(ours != theirs) < 0.01  # where the loss's gradient is not ~0
    np.testing.assert_allclose(np.abs(ours - x).max(), np.abs(theirs - x).max(), rtol=1e-5)
