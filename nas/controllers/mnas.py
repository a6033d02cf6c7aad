"""The MNAS controller: an LSTM policy over the space's decisions, trained with PPO or REINFORCE.

As in MnasNet (Tan et al. 2019) and NASNet (Zoph et al. 2018): a 1-layer LSTM (100 units by
default) emits one decision at a time, each a softmax over that decision's choices,
conditioned through the LSTM state on the choices already made (the previous choice is fed
back through a per-decision embedding). Weights start uniform(-0.1, 0.1). Every
``batch_size`` usable results the policy takes ``ppo_epochs`` Adam steps on the clipped PPO
objective (or the REINFORCE one) plus an entropy bonus.

What the default (``preset: budget``) adds to MnasNet's recipe, and why. Tried on
NAS-Bench-201 landscapes (real trained accuracy, Edge TPU latency) with 150 trials, the
paper's recipe was no better than random search under the hard reward, and in a quarter of
the runs it stopped early, proposing archs it had already tried 1,000 times in a row:

- *Rank advantages*: a result's advantage is its centred rank among all results so far
  (-0.5 worst, 0.5 best), not its reward minus a moving average. The hard reward is flat
  where the latency is under the target and falls off steeply above it; reward differences
  carry that shape and the noise of its flat part, ranks only the order.
- *Self-imitation* (Oh et al. 2018): each update also raises the log-probability of the
  ``elite`` best results so far, weighted by their rank. The policy gradient learns from a
  batch once; this keeps what the best results taught.
- *Novelty*: a proposal the run has already tried is drawn again (up to 200 times, the
  policy's temperature raised every 10 draws), so a sharpened policy keeps exploring until
  the budget ends instead of spending its asks on repeats.

``preset: paper`` keeps MnasNet's baseline advantages (EMA, decay 0.95) and no replay.

The policy is a few small matrices, so it is written in numpy with its gradient by hand
(backpropagation through time; ``tests/test_controllers.py`` checks it against finite
differences): a TensorFlow version spent ~0.2 s per proposal in eager ops and ~45 s tracing
its first update. Sampling uses the controller's numpy generator and the weights are seeded,
so a controller is deterministic given its seed and the order of feedback.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from search_spaces import Arch, SearchSpace

from nas.controllers.base import Controller, Proposal

log = logging.getLogger(__name__)


@functools.cache
def _threadpools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finding the BLAS libraries reads /proc/self/maps: once, not per ask


def _one_blas_thread():
    # These matrices are tiny: multithreaded BLAS spends more time waking threads than
    # multiplying, and fights the trials for the cores (3.5x slower measured here).
    return _threadpools().limit(limits=1, user_api="blas")


def _centred_rank(r: float, rewards: np.ndarray) -> float:
    """``r``'s place among ``rewards`` (ties halfway), centred: -0.5 (worst) to 0.5 (best)."""
    return float((np.sum(rewards < r) + 0.5 * np.sum(rewards == r)) / len(rewards) - 0.5)


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class _Adam:
    """Adam with Keras's defaults (beta 0.9/0.999, epsilon 1e-7)."""

    def __init__(self, lr: float):
        self.lr, self.t, self.m, self.v = lr, 0, {}, {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for k, g in grads.items():
            m = self.m[k] = 0.9 * self.m.get(k, 0.0) + 0.1 * g
            v = self.v[k] = 0.999 * self.v.get(k, 0.0) + 0.001 * g * g
            mhat, vhat = m / (1 - 0.9 ** self.t), v / (1 - 0.999 ** self.t)
            params[k] -= self.lr * mhat / (np.sqrt(vhat) + 1e-7)


#: MnasNet's settings (Tan et al. 2019, for ~8,000 sampled models): ``preset: paper``. Its
#: advantages are the reward minus the moving-average baseline, and nothing is replayed.
PAPER = {"learning_rate": 3.5e-4, "batch_size": 8, "ppo_epochs": 5, "entropy_weight": 1e-5, "baseline_decay": 0.95,
         "advantage": "baseline", "elite": 0}
#: ``preset: budget`` (the default): what is not derived from the budget. ``advantage: rank``
#: and ``elite: 8`` were chosen on NAS-Bench-201 landscapes (CIFAR-100 and ImageNet16-120
#: accuracy, Edge TPU latency; hard and soft rewards; seeds 1000-1014): with the paper's
#: baseline advantages the policy followed noise under the hard reward's flat region and
#: collapsed onto archs it had tried (``nas bench``: 1,240 asks for 144 archs).
BUDGET = {"ppo_epochs": 5, "entropy_weight": 1e-3, "baseline_decay": 0.9, "advantage": "rank", "elite": 8}
#: How far, in Adam steps times learning rate, the policy may move over the whole budget.
#: The paper's settings move it 3.5e-4 x 5 epochs x 8000/8 batches = 1.75 over 8,000 models.
#: First tuned on the surrogate landscapes (half the paper's reach, 0.875); with rank
#: advantages and self-imitation the policy learns from every result, and 0.5 reached
#: random search's final best soonest on the NAS-Bench-201 landscapes.
REACH = 0.5


def budget_settings(budget: int, concurrency: int, ppo_epochs: int = BUDGET["ppo_epochs"],
                    batch_size: int | None = None) -> dict[str, Any]:
    """The learning rate and batch that let the policy move REACH in ``budget`` trials (half
    what the paper's settings allow in 8,000): one update per round of ``concurrency`` results (at
    least 2, so the baseline-centred advantages of a batch carry information), and a step
    size of REACH / (updates x epochs), clipped to [3.5e-4, 0.05]."""
    batch = batch_size or int(min(max(2, concurrency), 32))  # a batch given explicitly sets the update count
    updates = max(1.0, budget / batch)
    lr = float(min(0.05, max(PAPER["learning_rate"], REACH / (updates * ppo_epochs))))
    return {"learning_rate": lr, "batch_size": batch}


class MNASController(Controller):
    """LSTM policy + PPO (default) or REINFORCE, per-batch updates (see the module doc).

    ``preset: budget`` (default): the learning rate and the update batch come from the
    search's budget and concurrency (:func:`budget_settings`, told through :meth:`plan`;
    before that, 100 trials one at a time), the rest from :data:`BUDGET` (rank advantages,
    self-imitation of the 8 best). ``preset: paper``: MnasNet's settings (:data:`PAPER`),
    which need thousands of trials to move the policy. A parameter given explicitly
    overrides either; ``novelty`` (on by default in both) redraws archs already tried.

    >>> import search_spaces
    >>> from nas.controllers.mnas import MNASController
    >>> space = search_spaces.get("efficientnet_edgetpu_bench", resolution=32, width=0.25, depth=0.5)
    >>> c = MNASController(space, seed=0)
    >>> c.plan(budget=200, concurrency=8)
    >>> c.batch_size, round(c.learning_rate, 4)
    (8, 0.004)
    >>> MNASController(space, preset="paper").learning_rate
    0.00035
    """

    name = "mnas"

    def __init__(self, space: SearchSpace, seed: int = 0, *, preset: str = "budget", hidden: int = 100,
                 learning_rate: float | None = None, algorithm: str = "ppo", batch_size: int | None = None,
                 ppo_epochs: int | None = None, clip: float = 0.2, entropy_weight: float | None = None,
                 baseline_decay: float | None = None, init_range: float = 0.1, advantage: str | None = None,
                 elite: int | None = None, novelty: bool = True):
        super().__init__(space, seed)
        if preset not in ("budget", "paper"):
            raise ValueError(f"controller.preset: unknown {preset!r}; allowed: budget, paper")
        given = {"learning_rate": learning_rate, "batch_size": batch_size, "ppo_epochs": ppo_epochs,
                 "entropy_weight": entropy_weight, "baseline_decay": baseline_decay, "advantage": advantage,
                 "elite": elite}
        self.preset, self.explicit = preset, {k for k, v in given.items() if v is not None}
        base = PAPER if preset == "paper" else {**BUDGET, **budget_settings(100, 1)}
        learning_rate, batch_size, ppo_epochs, entropy_weight, baseline_decay, advantage, elite = (
            base[k] if v is None else v for k, v in given.items())
        if advantage not in ("rank", "baseline"):
            raise ValueError(f"controller.advantage: unknown {advantage!r}; allowed: rank, baseline")
        if not isinstance(novelty, bool):
            raise ValueError(f"controller.novelty: expected true or false, got {novelty!r}")
        if algorithm not in ("ppo", "reinforce"):
            raise ValueError(f"controller.algorithm: unknown {algorithm!r}; allowed: ppo, reinforce")
        for what, v, lo, hi in (("hidden", hidden, 1, 4096), ("batch_size", batch_size, 1, 10_000),
                                ("ppo_epochs", ppo_epochs, 1, 1000), ("elite", elite, 0, 10_000)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"controller.{what}: expected an integer in [{lo}, {hi}], got {v!r}")
        for what, v, lo, hi in (("learning_rate", learning_rate, 0, 1), ("clip", clip, 0, 1),
                                ("entropy_weight", entropy_weight, 0, 10), ("baseline_decay", baseline_decay, 0, 1),
                                ("init_range", init_range, 0, 10)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"controller.{what}: expected a number in [{lo}, {hi}], got {v!r}")
        self.algorithm, self.batch_size, self.ppo_epochs = algorithm, batch_size, ppo_epochs
        self.clip, self.entropy_weight, self.baseline_decay = clip, entropy_weight, baseline_decay
        self.learning_rate = learning_rate
        self.advantage, self.novelty, self.elite = advantage, novelty, elite
        self.seen: set[str] = set()
        self.history: list[tuple[list[int], float]] = []  # every usable result: actions, reward
        self.sizes = [len(d.choices) for d in space.decision_list]
        self.hidden = H = hidden
        init = np.random.default_rng([seed, 7919])  # weights: their own stream, not the sampling one

        def u(*shape):
            return init.uniform(-init_range, init_range, shape)

        self.params: dict[str, np.ndarray] = {"W": u(2 * H, 4 * H), "b": u(4 * H), "start": u(1, H)}
        for t, n in enumerate(self.sizes):
            self.params[f"hw{t}"], self.params[f"hb{t}"] = u(H, n), u(n)
            if t < len(self.sizes) - 1:  # the last choice feeds no further step
                self.params[f"e{t}"] = u(n, H)
        self.optimizer = _Adam(learning_rate)
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float, float]] = []  # actions, old log-prob, reward
        self.last_entropy = float("nan")
        self.updates = 0

    # ------------------------------------------------------------------------------- policy

    def _forward(self, actions: np.ndarray | None, batch: int = 1, greedy: bool = False, temperature: float = 1.0):
        """Run the policy over all decisions for a batch; sample when ``actions`` is None
        (or take each step's most probable choice, ``greedy``).

        Returns actions (batch, T), log-probs (batch,), entropies (batch, T) and a cache
        for :meth:`_backward`.
        """
        P, H = self.params, self.hidden
        T = len(self.sizes)
        h, c = np.zeros((batch, H)), np.zeros((batch, H))
        x = np.repeat(P["start"], batch, axis=0)
        acts = np.zeros((batch, T), dtype=np.int64) if actions is None else np.asarray(actions, dtype=np.int64)
        logp, ent = np.zeros(batch), np.zeros((batch, T))
        cache = []
        for t, n in enumerate(self.sizes):
            u_in = np.concatenate([x, h], axis=1)
            z = u_in @ P["W"] + P["b"]
            i, f, g, o = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
            c_prev = c
            c = f * c + i * g
            tc = np.tanh(c)
            h = o * tc
            logits = h @ P[f"hw{t}"] + P[f"hb{t}"]
            lp = logits - logits.max(axis=1, keepdims=True)
            lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
            p = np.exp(lp)
            if actions is None and greedy:
                acts[:, t] = p.argmax(axis=1)
            elif actions is None:
                q = p if temperature == 1.0 else np.exp(lp / temperature)
                for b in range(batch):
                    acts[b, t] = self.rng.choice(n, p=q[b] / q[b].sum())
            a = acts[:, t]
            logp += lp[np.arange(batch), a]
            ent[:, t] = -(p * lp).sum(axis=1)
            cache.append((u_in, i, f, g, o, c_prev, c, tc, h, p, lp))
            if t < T - 1:
                x = P[f"e{t}"][a]
        return acts, logp, ent, cache

    def _backward(self, acts, cache, g_logp, g_ent):
        """Gradients of ``sum(g_logp * logp) + sum(g_ent * entropy)`` w.r.t. every parameter."""
        P, H = self.params, self.hidden
        T, B = len(self.sizes), acts.shape[0]
        grads = {k: np.zeros_like(v) for k, v in P.items()}
        dh_next, dc_next = np.zeros((B, H)), np.zeros((B, H))
        for t in reversed(range(T)):
            u_in, i, f, g, o, c_prev, c, tc, h, p, lp = cache[t]
            onehot = np.zeros_like(p)
            onehot[np.arange(B), acts[:, t]] = 1
            ent_t = -(p * lp).sum(axis=1, keepdims=True)
            # d logp / d logits = onehot - p;  d entropy / d logits = -p (log p + entropy)
            dlogits = g_logp[:, None] * (onehot - p) - g_ent[:, None] * p * (lp + ent_t)
            grads[f"hw{t}"] += h.T @ dlogits
            grads[f"hb{t}"] += dlogits.sum(axis=0)
            dh = dh_next + dlogits @ P[f"hw{t}"].T
            do = dh * tc
            dc = dc_next + dh * o * (1 - tc * tc)
            di, dg, df = dc * g, dc * i, dc * c_prev
            dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
            grads["W"] += u_in.T @ dz
            grads["b"] += dz.sum(axis=0)
            du = dz @ P["W"].T
            dx, dh_next, dc_next = du[:, :H], du[:, H:], dc * f
            if t == 0:
                grads["start"] += dx.sum(axis=0, keepdims=True)
            else:
                np.add.at(grads[f"e{t - 1}"], acts[:, t - 1], dx)
        return grads

    def propose(self) -> Proposal:
        with _one_blas_thread():
            acts, logp, ent, _ = self._forward(None)
            self.last_entropy = float(ent.mean())
            actions = [int(a) for a in acts[0]]
            arch = self.space.decode_indices(actions)
            key = arch.to_string()
            tries, tau = 0, 1.0
            while self.novelty and key in self.seen and tries < 200 and len(self.seen) < self.space.size:
                tries += 1
                if tries % 10 == 0:
                    tau *= 1.25  # a policy sure of archs already tried is widened until it finds a new one
                acts, logp, _, _ = self._forward(None, temperature=tau)
                actions = [int(a) for a in acts[0]]
                arch = self.space.decode_indices(actions)
                key = arch.to_string()
            if tau != 1.0:
                logp = self._forward(np.array([actions]))[1]
        if self.novelty:
            self.seen.add(key)
        return Proposal(arch, (actions, float(logp[0])))

    def most_likely(self) -> Arch:
        """Greedy decoding: each decision's most probable choice given those before it (the
        exact most likely arch of an LSTM policy would need a search over the space)."""
        with _one_blas_thread():
            acts = self._forward(None, greedy=True)[0]
        return self.space.decode_indices([int(a) for a in acts[0]])

    # ------------------------------------------------------------------------------ learning

    def learn(self, proposal: Proposal, reward: float) -> None:
        if self.novelty:
            self.seen.add(proposal.key)
        if proposal.data is not None:  # what this policy sampled, and how likely it was then
            actions, logp = proposal.data
        else:  # an arch this policy did not propose (replayed history, one-shot candidates, user seeds)
            actions = self.space.indices(self.space.encode(proposal.arch))
            logp = float(self._forward(np.array([actions]))[1][0])
        self.buffer.append((actions, logp, reward))
        self.history.append((list(actions), reward))
        if len(self.buffer) >= self.batch_size:
            self._update()

    def loss_gradients(self, actions: np.ndarray, old: np.ndarray, adv: np.ndarray):
        """Loss (to minimise) and its gradients for one batch: -objective - entropy bonus."""
        B = len(adv)
        acts, logp, ent, cache = self._forward(actions, batch=B)
        ratio = np.exp(logp - old)
        if self.algorithm == "ppo":
            clipped = np.clip(ratio, 1 - self.clip, 1 + self.clip)
            use_ratio = ratio * adv <= clipped * adv  # where min() takes the unclipped term
            objective = np.minimum(ratio * adv, clipped * adv).mean()
            d_logp = np.where(use_ratio, ratio * adv, 0.0)
        else:
            objective = (logp * adv).mean()
            d_logp = adv.copy()
        loss = -objective - self.entropy_weight * ent.sum(axis=1).mean()
        grads = self._backward(acts, cache, -d_logp / B, np.full(B, -self.entropy_weight / B))
        return loss, grads

    def _update(self) -> None:
        actions = np.array([b[0] for b in self.buffer], dtype=np.int64)
        old = np.array([b[1] for b in self.buffer])
        adv = []
        for _, _, r in self.buffer:  # EMA baseline, updated reward by reward as MnasNet does
            self.baseline = r if self.baseline is None else self.baseline_decay * self.baseline + (
                1 - self.baseline_decay) * r
            adv.append(r - self.baseline)
        adv = np.array(adv)
        hist = np.array([r for _, r in self.history])
        if self.advantage == "rank":
            adv = np.array([_centred_rank(r, hist) for _, _, r in self.buffer])
        elite = None
        if self.elite:
            top = np.argsort(-hist, kind="stable")[:self.elite]
            e_act = np.array([self.history[i][0] for i in top], dtype=np.int64)
            e_adv = (np.array([_centred_rank(hist[i], hist) for i in top]) if self.advantage == "rank"
                     else np.maximum(hist[top] - self.baseline, 0.0))
            elite = (e_act, e_adv)
        with _one_blas_thread():
            for _ in range(self.ppo_epochs if self.algorithm == "ppo" else 1):
                _, grads = self.loss_gradients(actions, old, adv)
                if elite is not None:  # self-imitation: the best results so far, replayed (Oh et al. 2018)
                    e_logp = self._forward(elite[0], batch=len(elite[1]))
                    g2 = self._backward(elite[0], e_logp[3], -elite[1] / len(elite[1]), np.zeros(len(elite[1])))
                    for k in grads:
                        grads[k] += g2[k]
                self.optimizer.step(self.params, grads)
        self.buffer.clear()
        self.updates += 1

    def for_weight_sharing(self) -> None:
        """The one-shot search's controller (:mod:`nas.oneshot.search`): its rewards are one batch's
        accuracy of a supernet still training, noisy and non-stationary, so a sample is never
        a repeat worth avoiding and the best single-batch scores are not worth replaying. Back
        to MnasNet's baseline advantages, no replay, no novelty (unless given explicitly)."""
        if "advantage" not in self.explicit:
            self.advantage = "baseline"
        if "elite" not in self.explicit:
            self.elite = 0
        self.novelty = False

    def plan(self, budget: int, concurrency: int) -> None:
        """With ``preset: budget``, derive the learning rate and the batch (unless given)."""
        super().plan(budget, concurrency)
        if self.preset != "budget" or self.n_feedback:
            return
        # REACH is the policy's total movement: REINFORCE takes one Adam step per update, PPO ppo_epochs.
        derived = budget_settings(budget, concurrency, self.ppo_epochs if self.algorithm == "ppo" else 1,
                                  self.batch_size if "batch_size" in self.explicit else None)
        if "learning_rate" not in self.explicit:
            self.learning_rate = self.optimizer.lr = derived["learning_rate"]
        if "batch_size" not in self.explicit:
            self.batch_size = derived["batch_size"]

    def summary(self) -> dict[str, Any]:
        return super().summary() | {"entropy": self.last_entropy, "baseline": self.baseline, "updates": self.updates,
                                    "learning_rate": self.learning_rate, "batch_size": self.batch_size,
                                    "advantage": self.advantage, "elite": self.elite, "novelty": self.novelty}
