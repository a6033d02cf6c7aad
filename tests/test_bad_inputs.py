"""The bad-input catalogue: what a new user gets wrong, and the one line they get back.

Every case runs the real CLI in a fresh process and checks: exit status 2, exactly one line
on stderr starting ``error:`` that contains the expected text (field, given value, what is
allowed or a hint), no traceback, nothing on stdout, and nothing written to the working folder.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml


GOOD = {
    "version": 1, "name": "t", "seed": 0,
    "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25},
    "controller": {"name": "random"}, "reward": {"target_ms": 1.8},
    "data": {"source": "digits", "limit": 100}, "train": {"epochs": 1}, "budget": {"trials": 2},
}


def with_(path: str, value):
    """GOOD with one key path set (``a.b``); value ``...`` deletes it."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return data


def member() -> str:
    """An arch string of GOOD's space (with the digits' 10 classes)."""
    import search_spaces

    return search_spaces.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.25,
                             num_classes=10).sample(0).to_string()


def exp(tmp, data, name="exp.yaml"):
    p = tmp / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p.name


def images(tmp, classes):
    from PIL import Image

    root = tmp / "imgs"
    root.mkdir()
    for c in range(classes):
        (root / f"c{c}").mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


ARCH = "v1-res32:stem-k3-s2-o8-relu:ds-r1-k3-s1-o8-relu:head-o64-relu"

# (id, setup(tmp) -> argv, expected text in the error line)
CASES = [
    ("yaml-malformed", lambda t: ["search", exp(t, "space: {name: [efficientnet\n")], "exp.yaml: not valid YAML at line 2, column 1"),
    ("yaml-not-mapping", lambda t: ["search", exp(t, "- space\n- reward\n")], "exp.yaml: expected a mapping of sections (space, reward, budget, ...), got list"),
    ("yaml-missing-file", lambda t: ["search", "nope.yaml"], "experiment 'nope.yaml': no such file"),
    ("unknown-top-key", lambda t: ["search", exp(t, with_("trainer", {"epochs": 1}))], "exp.yaml: trainer: unknown key (given {'epochs': 1})"),
    ("unknown-nested-key", lambda t: ["search", exp(t, with_("train.epoch", 3))], "exp.yaml: train.epoch: unknown key (given 3)"),
    ("wrong-type", lambda t: ["search", exp(t, with_("train.epochs", "three"))], "train.epochs: Input should be a valid integer (given 'three')"),
    ("negative-lr", lambda t: ["search", exp(t, with_("train.learning_rate", -1))], "train.learning_rate: Input should be greater than 0 (given -1)"),
    ("zero-trials", lambda t: ["search", exp(t, with_("budget.trials", 0))],
     "budget.trials: Input should be greater than or equal to 1 (given 0)"),
    ("bad-version", lambda t: ["search", exp(t, with_("version", 2))], "version: Input should be 1 (given 2)"),
    ("oneshot-bad-strategy", lambda t: ["search", exp(t, with_("search.strategy", "supernet"))],
     "search.strategy: Input should be 'standalone' or 'oneshot' (given 'supernet')"),
    ("oneshot-unknown-key", lambda t: ["search", exp(t, with_("search.oneshot.epoch", 3))],
     "search.oneshot.epoch: unknown key (given 3)"),
    ("oneshot-warmup", lambda t: ["search", exp(t, with_("search.oneshot.warmup", 1))],
     "search.oneshot.warmup: Input should be less than 1 (given 1)"),
    ("oneshot-largest-until", lambda t: ["search", exp(t, with_("search.oneshot.largest_until", 1.5))],
     "search.oneshot.largest_until: Input should be less than or equal to 1 (given 1.5)"),
    ("hold-unknown-decision", lambda t: ["search", exp(t, with_("space.hold", {"arch": "efficientnet_edgetpu_s",
                                                                              "decisions": ["blocks"]}))],
     "space.hold.decisions: 'blocks' is not a decision of efficientnet_edgetpu; allowed: activation, block, "
     "expansion, filters, kernel, repeats, se (every stage) or one stage's, e.g. s1.block (did you mean 'block'?)"),
    ("hold-without-arch", lambda t: ["search", exp(t, with_("space.hold", {"decisions": ["s2.block"]}))],
     "space.hold.arch: needed by space.hold.decisions (s2.block): the arch (a reference name or arch string)"),
    ("hold-bad-value", lambda t: ["search", exp(t, with_("space.hold", {"values": {"expansion": 3}}))],
     "space.hold.values.expansion: 3 is not a choice; allowed: 1, 2, 4, 6, 8"),
    ("hold-arch-not-in-space", lambda t: ["search", exp(t, with_("space.hold", {"arch": "mobilenet_v2",
                                                                               "decisions": ["block"]}))],
     "space.hold.arch: arch is not in space efficientnet_edgetpu"),
    ("hold-unknown-key", lambda t: ["search", exp(t, with_("space.hold", {"from": "efficientnet_edgetpu_s"}))],
     "space.hold.from: unknown key (given 'efficientnet_edgetpu_s')"),
    ("oneshot-classifier-init", lambda t: ["search", exp(t, with_("search.oneshot.classifier_init", "ones"))],
     "search.oneshot.classifier_init: Input should be 'default' or 'zeros' (given 'ones')"),
    ("oneshot-repeated-target", lambda t: ["search", exp(t, with_("search.oneshot.targets_ms", [2.5, 2.5]))],
     "search.oneshot.targets_ms: [2.5, 2.5] repeats a target; allowed: distinct numbers > 0"),
    ("oneshot-controller", lambda t: ["search", exp(t, with_("search.strategy", "oneshot"))],
     "controller.name: 'random' cannot drive a one-shot search (search.strategy: oneshot); allowed: mnas, logits"),
    ("list-controller-bad-arch", lambda t: ["search", exp(t, with_("controller", {"name": "list",
                                                                                "params": {"archs": ["nope"]}}))],
     "controller.archs[0]: 'nope' is not an arch string"),
    ("queue-not-a-member", lambda t: ["search", exp(t, with_("search.queue", ["v1-res32:nope"]))],
     "search.queue[0]: 'v1-res32:nope' is not a member of space 'efficientnet_edgetpu'"),
    ("queue-with-oneshot", lambda t: ["search", exp(t, with_("search", {"strategy": "oneshot", "queue": [member()]}))],
     "search.queue: a one-shot search queues its supernets' candidates there itself; allowed: an empty queue"),
    ("bad-optimizer", lambda t: ["search", exp(t, with_("train.optimizer", "lion"))],
     "train.optimizer: Input should be 'adam', 'sgd' or 'rmsprop' (given 'lion')"),
    ("bad-allocator", lambda t: ["search", exp(t, with_("train.allocator", "tcmalloc"))],
     "train.allocator: Input should be 'jemalloc' or 'system' (given 'tcmalloc')"),
    ("space-typo", lambda t: ["search", exp(t, with_("space.name", "efficientnet_edgtpu"))],
     "space: unknown name 'efficientnet_edgtpu'"),
    ("space-bad-width", lambda t: ["search", exp(t, with_("space.width", -1))],
     "space.width: Input should be greater than 0 (given -1)"),
    ("space-import-missing", lambda t: ["search", exp(t, with_("space.name", "no_such_module:Space"))],
     "space 'no_such_module:Space': cannot import it (No module named 'no_such_module')"),
    ("space-import-not-a-space", lambda t: ["search", exp(t, with_("space.name", "collections:OrderedDict"))],
     "is not a SearchSpace subclass"),
    ("controller-typo", lambda t: ["search", exp(t, with_("controller.name", "evolutoin"))],
     "controller: unknown name 'evolutoin'"),
    ("controller-bad-param", lambda t: ["search", exp(t, with_("controller", {"name": "evolution",
                                                                             "params": {"population": 1}}))],
     "controller.population: expected an integer >= 2, got 1"),
    ("controller-optuna-bad-sampler", lambda t: ["search", exp(t, with_("controller", {"name": "optuna",
                                                                                     "params": {"sampler": "cmaes"}}))],
     "controller.sampler: unknown 'cmaes'; allowed: tpe, nsga2, motpe"),
    ("controller-mnas-bad-preset", lambda t: ["search", exp(t, with_("controller", {"name": "mnas",
                                                                                  "params": {"preset": "fast"}}))],
     "controller.preset: unknown 'fast'; allowed: budget, paper"),
    ("search-bad-repeats", lambda t: ["search", exp(t, with_("search.repeats", "skip"))],
     "search.repeats: Input should be 'record' or 'train' (given 'skip')"),
    ("train-bad-loop", lambda t: ["search", exp(t, with_("train.loop", "fit"))],
     "train.loop: Input should be 'step' or 'keras' (given 'fit')"),
    ("reward-bad-preset", lambda t: ["search", exp(t, with_("reward.preset", "medium"))],
     "reward.preset: Input should be 'soft' or 'hard' (given 'medium')"),
    ("reward-zero-target", lambda t: ["search", exp(t, with_("reward.target_ms", 0))],
     "reward.target_ms: Input should be greater than 0 (given 0)"),
    ("latency-typo", lambda t: ["search", exp(t, with_("latency", {"source": "edgetpu-modle"}))],
     "latency source: unknown name 'edgetpu-modle'; allowed: edgetpu, edgetpu-model"),
    ("gpus-not-a-share", lambda t: ["search", exp(t, with_("budget.gpus_per_trial", 1.5))],
     "budget.gpus_per_trial: 1.5 is neither a share of one GPU nor whole GPUs; allowed: 0 (CPU), a fraction in (0, 1]"),
    ("precision-unknown", lambda t: ["search", exp(t, with_("train.precision", "bfloat16"))],
     "train.precision: Input should be 'float32' or 'mixed_float16' (given 'bfloat16')"),
    ("service-for-a-predictor", lambda t: ["search", exp(t, with_("latency.service", {"mode": "service"}))],
     "latency.service.mode: service times the models of a measured source (edgetpu, tflite-cpu); latency.source "
     "'edgetpu-model' predicts in the trial; allowed: auto or trial, or a measured source"),
    ("replay-bad-timings", lambda t: ["search", exp(t, with_("latency", {"source": "edgetpu", "options": {
        "backend": "replay", "replay": {"timings_ms": [0]}}}))],
     "edgetpu option replay.timings_ms: got [0]; allowed: a non-empty list of latencies > 0 (ms)"),
    ("edgetpu-without-hardware", lambda t: ["search", exp(t, with_("latency", {"source": "edgetpu"}))],
     "Edge TPU compiler 'edgetpu_compiler' not found on PATH"),
    ("data-unknown-source", lambda t: ["search", exp(t, with_("data.source", "ftp:mnist"))],
     "data.source: unknown 'ftp:mnist'; allowed: mnist5k, digits, npz:PATH, folder:PATH, tfds:NAME"),
    ("data-folder-missing", lambda t: ["search", exp(t, with_("data.source", "folder:/nonexistent/images"))],
     "data.source: folder '/nonexistent/images' does not exist"),
    ("data-folder-empty", lambda t: (t.joinpath("empty").mkdir(),
                                     ["search", exp(t, with_("data.source", f"folder:{t / 'empty'}"))])[1],
     "has 0 class sub-folder(s); an image folder needs one sub-folder per class, at least 2"),
    ("data-folder-one-class", lambda t: ["search", exp(t, with_("data.source", f"folder:{images(t, 1)}"))],
     "has 1 class sub-folder(s); an image folder needs one sub-folder per class"),
    ("data-folder-empty-class", lambda t: (images(t, 2).joinpath("c9").mkdir(),
                                           ["search", exp(t, with_("data.source", f"folder:{t / 'imgs'}"))])[1],
     "has class folder(s) without images: 'c9'; allowed: remove them, or add images (.png, .jpg"),
    ("train-augment-unknown", lambda t: ["search", exp(t, with_("train.augment", "mixup"))],
     "train.augment: Input should be 'none', 'shift' or 'photo' (given 'mixup')"),
    ("train-warmup-too-long", lambda t: ["search", exp(t, with_("train.warmup_epochs", 1))],
     "train.warmup_epochs: 1 leaves no epoch after the warm-up of train.epochs 1; allowed: 0 <= warmup_epochs"),
    ("train-eval-every-asha", lambda t: ["search", exp(t, {**with_("train.eval_every", 0),
                                                           "ray": {"scheduler": "asha"}})],
     "train.eval_every: 0 reports no accuracy before the end, and ray.scheduler asha ranks trials"),
    ("score-accuracy-unknown", lambda t: ["search", exp(t, with_("score.accuracy", "int4"))],
     "score.accuracy: Input should be 'float' or 'int8' (given 'int4')"),
    ("export-margin-negative", lambda t: ["search", exp(t, with_("export.int8_margin", -0.1))],
     "export.int8_margin: Input should be greater than or equal to 0 (given -0.1)"),
    ("data-tfds-unknown", lambda t: ["search", exp(t, with_("data.source", "tfds:no_such_set_xyz"))],
     "data.source: 'tfds:no_such_set_xyz'"),
    ("data-npz-missing", lambda t: ["search", exp(t, with_("data.source", "npz:missing.npz"))],
     "data.source: file 'missing.npz' does not exist"),
    ("run-folder-exists", lambda t: (t.joinpath("run").mkdir(), t.joinpath("run", "x").write_text("x"),
                                     ["search", exp(t, GOOD), "--out", "run"])[2],
     "--out: run folder 'run' already exists; pass --resume to continue it"),
    ("resume-nothing", lambda t: ["search", exp(t, GOOD), "--out", "norun", "--resume"],
     "--resume: 'norun' is not a run folder (no experiment.yaml)"),
    ("out-under-a-file", lambda t: (t.joinpath("afile").write_text("x"),
                                    ["search", exp(t, GOOD), "--out", "afile/run"])[1], "is a file, not a folder"),
    ("max-trials-zero", lambda t: ["search", exp(t, GOOD), "--max-trials", "0"],
     "Invalid value for '--max-trials': 0 is not in the range x>=1."),
    ("arch-malformed", lambda t: ["arch", "show", "v1-res32:garbage"],
     "arch string 'v1-res32:garbage': expected 4 sections 'header:stem:stages:head'"),
    ("arch-bad-block", lambda t: ["arch", "show", ARCH.replace("ds-r1", "dz-r1")],
     "unknown block type 'dz'; allowed: mbconv, fused_mbconv, conv, ds"),
    ("export-no-run", lambda t: ["export", "norun"], "RUN_DIR: 'norun' does not exist"),
    ("spaces-show-typo", lambda t: ["spaces", "show", "mnasnt"], "did you mean 'mnasnet'"),
    ("predict-corrupt-predictor", lambda t: (t.joinpath("pred").mkdir(), t.joinpath("pred", "predictor.json")
                                             .write_text("{not json"),
                                             ["latency", "predict", ARCH, "--source", str(t / "pred")])[2],
     "predictor.json is not valid JSON"),
    ("measure-float-tflite-on-edgetpu", lambda t: ["latency", "measure", float_tflite(t), "--source", "edgetpu"],
     "Edge TPU compiler 'edgetpu_compiler' not found on PATH"),
    ("predict-float-tflite", lambda t: ["latency", "predict", float_tflite(t)],
     "float.tflite: not an int8-quantized model"),
    ("proxy-wider-than-deployment", lambda t: ["search", exp(t, with_("proxy", {"width": 1.5}))],
     "proxy.width: 1.5 would make the proxy larger than the deployment model; allowed (0.05 <= width <= 1"),
    ("proxy-deeper-than-deployment", lambda t: ["search", exp(t, with_("proxy", {"depth": 2}))],
     "proxy.depth: 2 would make the proxy larger than the deployment model"),
    ("proxy-higher-resolution", lambda t: ["search", exp(t, with_("proxy", {"resolution": 64}))],
     "proxy.resolution: 64 is larger than the deployment model's space.resolution 32; allowed 8..32"),
    ("proxy-unknown-key", lambda t: ["search", exp(t, with_("proxy", {"size": 0.5}))],
     "proxy.size: unknown key (given 0.5)"),
    ("proxy-space-that-does-not-scale", lambda t: ["search", exp(t, thin_space(t))],
     "proxy: scaling the archs of space thin by (width 0.5, depth 1, resolution unchanged) makes them larger"),
    ("space-classes-not-the-datas", lambda t: ["search", exp(t, with_("space.num_classes", 7))],
     "space.num_classes: 7 classes, but data.source 'digits' has 10; allowed: 10 (or leave it out)"),
    ("export-bad-scale", lambda t: ["export", "norun", "--scale", "full"],
     "Invalid value for '--scale': 'full' is not one of 'deployment', 'proxy'."),
    ("bench-controller-typo", lambda t: ["bench", "-c", "randm"], "--controller: unknown name 'randm'"),
    ("bench-table-missing", lambda t: ["bench", "--table", "nope.csv"], "table: file 'nope.csv' does not exist"),
    ("bench-surrogate-option-in-table-mode", lambda t: ["bench", "--landscapes", "5"],
     "--landscapes: applies to --mode surrogate only; given 5 with --mode table"),
    ("bench-table-option-in-surrogate-mode", lambda t: ["bench", "--mode", "surrogate", "--table", "t.csv"],
     "--table: applies to --mode table only; given 't.csv' with --mode surrogate"),
    ("bench-mode-typo", lambda t: ["bench", "--mode", "landscape"],
     "Invalid value for '--mode': 'landscape' is not one of 'table', 'surrogate'."),
    ("bench-batch-zero", lambda t: ["bench", "--batch", "0"],
     "Invalid value for '--batch': 0 is not in the range x>=1."),
    ("bench-repeats-typo", lambda t: ["bench", "--repeats", "retrain"],
     "Invalid value for '--repeats': 'retrain' is not one of 'record', 'train'."),
    ("bench-controller-import-missing", lambda t: ["bench", "-c", "no_such_module:Greedy"],
     "controller 'no_such_module:Greedy': cannot import it (No module named 'no_such_module')"),
    ("bench-controller-twice", lambda t: ["bench", "-c", "evolution", "-c", "evolution"],
     "--controller: 'evolution' given twice; give each controller once"),
    ("bench-tunas-with-preset", lambda t: ["bench", "--reward", "tunas", "--preset", "hard"],
     "--reward/--preset/--alpha/--beta: kind tunas (ACC + beta * |LAT/T - 1|) takes only beta (default -0.1); got "
     "preset 'hard'"),
]



THIN_SPACE = '''
from search_spaces import Arch, Block, Decision, Head, SearchSpace, Stem


class Thin(SearchSpace):
    # 4-channel stages: rounding to multiples of 8 makes any 'smaller' copy wider
    name = "thin"
    resolution = 32

    def decisions(self):
        return [Decision("kernel", (3, 5))]

    def make_arch(self, c):
        return Arch(stem=Stem(4), head=Head(16), resolution=32,
                    stages=(Block("ds", 4, kernel=c["kernel"]), Block("ds", 4, stride=2)))
'''


def thin_space(tmp):
    (tmp / "thin_space.py").write_text(THIN_SPACE)
    return {**with_("space", {"name": "thin_space:Thin"}), "proxy": {"width": 0.5}}


def float_tflite(tmp):
    """A float (not int8) .tflite: what a user converts without quantisation."""
    import keras
    import tensorflow as tf

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    path = tmp / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path.name


@pytest.mark.parametrize("setup, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(tmp_path, setup, expected):
    argv = setup(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # (no bytecode: a user module imported from the folder must not count as written)
    r = subprocess.run([sys.executable, "-m", "nas.cli", *map(str, argv)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert expected in lines[0], lines[0]
    assert r.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "something was written"


def test_the_catalogue_is_big_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
