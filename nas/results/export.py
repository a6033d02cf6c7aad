"""``nas export``: the best (or a given) arch of a run, trained and written as plain artefacts.

What is exported is what the user ships: the *deployment* arch (the run's best, at the
space's resolution and width), trained on the experiment's data at the deployment
resolution. ``--scale proxy`` trains and writes the proxy instead (the model the search
trained, minutes instead of hours at full size); the latencies in the summary are the
deployment model's either way.

Writes into a new folder (``RUN/export`` by default; an existing non-empty folder is refused)::

    model.keras           the trained model; standard Keras layers only, so
                          keras.saving.load_model() loads it without this toolkit
    model_int8.tflite     full-integer (int8 in and out), calibrated on training images
    model_edgetpu.tflite  the Edge TPU build, when edgetpu_compiler is installed
    arch.txt              the arch string of the model written
    summary.json          the scale trained, accuracy (float and int8), the deployment
                          model's latency (the experiment's source, and tflite-cpu measured
                          here), params, MACs, on/off-chip bytes, input format

The files are written to a temporary folder beside the output and renamed into place at the
end, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from latency_models import Target, get_source
from latency_models.convert import to_int8_tflite
from latency_models.edgetpu.compiler import run_compiler
from latency_models.errors import EdgeTPUCompilerNotFound
from search_spaces import Arch, build_model, count_macs, count_params

from nas.trial import proxy
from nas.config.experiment import ExperimentConfig
from nas.trial.devices import precision, scope, setup_gpus, strategy
from nas.core.errors import RunFolderError
from nas.trial.int8 import evaluate_tflite, plain_model
from nas.trial.recipe import compile_model, load_data, measure_latency, optimizer, train_model
from nas.ledger.folder import RunFolder, staged_folder

log = logging.getLogger(__name__)


SCALES = ("deployment", "proxy")


def export(run_dir: str | Path, *, arch: str | None = None, epochs: int | None = None,
           out: str | Path | None = None, scale: str = "deployment") -> dict[str, Any]:
    """Train and write the artefacts; the summary (also written as summary.json).

    ``arch`` is a deployment arch string (default: the run's best); ``scale`` says which of
    its two models is trained and written: ``deployment`` (what is shipped) or ``proxy``.
    """
    if scale not in SCALES:
        raise ValueError(f"--scale: unknown {scale!r}; allowed: {', '.join(SCALES)}")
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise RunFolderError(f"RUN_DIR: {str(run_dir)!r} does not exist")
    cfg = run.experiment()
    if arch is None:
        arch = run.best_arch()
        if arch is None:
            raise RunFolderError(f"RUN_DIR: {str(run_dir)!r} has no best_arch.txt (no trial succeeded yet); "
                                 "pass --arch STRING")
    try:
        parsed = Arch.from_string(arch)
    except ValueError as e:
        raise ValueError(f"--arch: {e}") from None
    out_dir = Path(out) if out is not None else run.path / "export"
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RunFolderError(f"--out: {str(out_dir)!r} already exists and is not empty; choose another --out")
    with staged_folder(out_dir) as work:
        summary = _export(parsed, cfg, epochs, work, scale)
    summary["out"] = str(out_dir)
    return summary


def _export(deploy, cfg: ExperimentConfig, epochs: int | None, work: Path, scale: str) -> dict[str, Any]:
    import keras

    # export's own recipe: the export section over train's (nas export --epochs over both)
    cfg = cfg.model_copy(update={"train": cfg.export.recipe(cfg.train, epochs)})
    small = proxy.of(deploy, cfg)
    arch = deploy if scale == "deployment" else small
    res = arch.resolution
    split = load_data(cfg, res)
    classes = split.num_classes
    shape = (res, res, cfg.data.channels)
    deploy_shape = (deploy.resolution, deploy.resolution, cfg.data.channels)
    setup_gpus(cfg, share=1.0)  # the export has this machine's GPUs to itself
    strat = strategy(cfg, "nas export")
    keras.utils.set_random_seed(cfg.seed)
    with scope(strat), precision(cfg):
        model = build_model(arch, shape, classes, seed=cfg.seed)
    t0 = time.perf_counter()
    log.info("training the %s model %s at %d px for %d epochs", scale, arch.to_string(), res, cfg.train.epochs)
    acc, n_epochs = train_model(model, split, cfg, strategy=strat)
    train_s = time.perf_counter() - t0
    files = ["model.keras", "model_int8.tflite", "arch.txt", "summary.json"]
    plain = plain_model(model, arch, shape, classes, mixed=cfg.train.precision != "float32", seed=cfg.seed)
    if plain is not model:  # rebuilt: compiled as train_model leaves a model, so plain Keras can fine-tune it
        model = plain
        compile_model(model, optimizer(cfg, 1))
    model.save(work / "model.keras")
    e = cfg.export
    calib = split.sample_train(e.calibration_images, cfg.seed)
    tflite = to_int8_tflite(model, calib, n_samples=len(calib))
    (work / "model_int8.tflite").write_bytes(tflite)
    (work / "arch.txt").write_text(arch.to_string() + "\n")

    lat = measure_latency(deploy, cfg, classes)
    cpu_src = get_source("tflite-cpu")
    cpu = cpu_src(Target(tflite))
    # The deployment model's host latency: the file just written when it is that model; for a
    # proxy export, the deployment arch converted here (latency needs no trained weights).
    deploy_cpu = cpu if arch == deploy else cpu_src(Target(deploy, input_shape=deploy_shape, num_classes=classes))
    x, y = split.val_arrays(limit=e.eval_images)
    int8_acc = _int8_accuracy(tflite, x, y)
    float_acc = acc if e.eval_images is None or e.eval_images >= split.n_val else _float_accuracy(model, x, y)
    if int8_acc is not None and int8_acc < float_acc - e.int8_margin:
        log.warning("the int8 model's accuracy %.4f is %.4f below the float model's %.4f on the same %d validation "
                    "images (export.int8_margin %g): post-training quantization hurts this model; try more "
                    "export.calibration_images, or another arch", int8_acc, float_acc - int8_acc, float_acc, len(y),
                    e.int8_margin)
    summary: dict[str, Any] = {
        "scale": scale, "arch": arch.to_string(), "deployment_arch": deploy.to_string(),
        "proxy_arch": small.to_string(), "accuracy": acc, "int8_accuracy": int8_acc,
        "int8": {"eval_images": len(y), "float_accuracy": float_acc, "calibration_images": len(calib),
                 "margin": e.int8_margin, "below_margin": int8_acc is not None and int8_acc < float_acc - e.int8_margin},
        "epochs": n_epochs, "recipe": cfg.train.model_dump(include=set(cfg.export.RECIPE)),
        "train_s": round(train_s, 1),
        # The deployment model's figures, whatever was trained:
        **lat, "tflite_cpu_ms": deploy_cpu.latency_ms, "tflite_cpu_source": cpu.source_version,
        "tflite_cpu_xnnpack": deploy_cpu.details.get("xnnpack"),
        "params": count_params(deploy, deploy_shape, classes), "macs": count_macs(deploy, deploy_shape, classes),
        # The model written:
        "model": {"params": count_params(arch, shape, classes), "macs": count_macs(arch, shape, classes),
                  "tflite_cpu_ms": cpu.latency_ms, "resolution": res},
        "input": {"shape": list(shape), "dtype": "float32", "range": [0.0, 1.0], "data": cfg.data.source},
        "num_classes": classes, "experiment": cfg.name, "files": files,
    }
    edgetpu = _compile_edgetpu(work)
    if edgetpu is not None:
        files.insert(2, "model_edgetpu.tflite")
        summary["edgetpu_compiler"] = edgetpu
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    del model
    keras.backend.clear_session()
    return summary


def _int8_accuracy(tflite: bytes, x, y) -> float | None:
    """Validation accuracy of the int8 file (run in a fresh process); None, with a warning,
    when it cannot be run here."""
    try:
        return evaluate_tflite(tflite, x, y)
    except Exception as e:  # noqa: BLE001 - the summary says it could not be measured
        log.warning("int8 accuracy not measured: %s", e)
        return None


def _float_accuracy(model, x, y) -> float:
    """The float model's accuracy on the images the int8 model was evaluated on."""
    p = model.predict(x, batch_size=256, verbose=0)
    return float((p.argmax(axis=-1) == y).mean())


def _compile_edgetpu(work: Path) -> dict[str, Any] | None:
    try:
        report = run_compiler(work / "model_int8.tflite", work)
    except EdgeTPUCompilerNotFound:
        log.info("edgetpu_compiler not installed: no model_edgetpu.tflite")
        return None
    if not report.success:
        log.warning("edgetpu_compiler failed; no model_edgetpu.tflite")
        return None
    compiled = work / "model_int8_edgetpu.tflite"
    if compiled.is_file():
        compiled.rename(work / "model_edgetpu.tflite")
    for log_file in work.glob("*.log"):
        log_file.unlink()
    return {"on_chip_bytes": report.on_chip_bytes, "off_chip_bytes": report.off_chip_bytes,
            "ops_on_tpu": report.n_ops_on_tpu, "ops_on_cpu": report.n_ops_on_cpu}
