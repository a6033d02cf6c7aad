"""One trial: build the candidate, train its proxy, score the deployment model, return a record.

- :mod:`nas.trial.entry`: :func:`~nas.trial.entry.run_trial`, the entry point every runner calls;
- :mod:`nas.trial.recipe`: data, training, latency and int8 steps of the recipe;
- :mod:`nas.trial.training`: the training loop, and :mod:`nas.trial.updates` its fused weight
  updates, loss scaling and replicas;
- :mod:`nas.trial.proxy`: the proxy model a trial trains beside the deployment model;
- :mod:`nas.trial.devices`: GPUs, distribution strategies and mixed precision;
- :mod:`nas.trial.int8`: int8 conversion and accuracy of the deployment model;
- :mod:`nas.trial.worker`: the worker process (threads, memory, allocator);
- :mod:`nas.trial.faults`: fault injection (``faults:``);
- :mod:`nas.trial.hypermodel`: the same trial as a keras-tuner HyperModel.

May import: :mod:`nas.core`, :mod:`nas.config`, :mod:`nas.data`.
"""

from nas.core.lazy import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "run_trial": "nas.trial.entry",
    "load_data": "nas.trial.recipe",
    "train_model": "nas.trial.recipe",
    "describe": "nas.trial.proxy",
    "space_of": "nas.trial.proxy",
    "proxy_of": "nas.trial.proxy:of",
    "limit_threads": "nas.trial.worker",
    "peak_rss_mb": "nas.trial.worker",
    "rss_mb": "nas.trial.worker",
    "Step": "nas.trial.training",
    "pick": "nas.trial.faults",
    "precision": "nas.trial.devices",
    "scope": "nas.trial.devices",
    "setup_gpus": "nas.trial.devices",
    "strategy": "nas.trial.devices",
})
