"""Independent logits: one softmax per decision, trained with REINFORCE (TuNAS's controller).

Where the ``mnas`` controller's LSTM conditions each decision on the ones before it, this
policy holds one logit vector per decision and samples them independently, as TuNAS (Bender
et al. 2020) does: a factorised policy whose entropy and most likely arch are exact, and
which can learn from every step of a one-shot search. Logits start at zero (the uniform
policy). Each usable result updates it at once, or every ``batch_size`` results: the
REINFORCE gradient of the reward centred by an exponential moving-average baseline, plus an
optional entropy bonus, through Adam.

>>> import search_spaces
>>> space = search_spaces.get("efficientnet_edgetpu_bench", resolution=32, width=0.25, depth=0.5)
>>> c = IndependentLogits(space, seed=0)
>>> round(c.entropy(), 4) == round(c.max_entropy(), 4)   # uniform at first
True
>>> c.tell(c.ask(), {"reward": 1.0, "status": "ok"})
>>> space.contains(c.most_likely())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search_spaces import Arch, SearchSpace

from nas.controllers.base import Controller, Proposal


class IndependentLogits(Controller):
    """A factorised softmax policy over the space's decisions, REINFORCE with an EMA baseline."""

    name = "logits"

    def __init__(self, space: SearchSpace, seed: int = 0, *, learning_rate: float = 0.05, batch_size: int = 1,
                 baseline_decay: float = 0.95, entropy_weight: float = 0.0):
        super().__init__(space, seed)
        for what, v, lo, hi in (("learning_rate", learning_rate, 0, 10), ("baseline_decay", baseline_decay, 0, 1),
                                ("entropy_weight", entropy_weight, 0, 10)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"controller.{what}: expected a number in [{lo}, {hi}], got {v!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:
            raise ValueError(f"controller.batch_size: expected an integer in [1, 10000], got {batch_size!r}")
        self.learning_rate, self.batch_size = float(learning_rate), batch_size
        self.baseline_decay, self.entropy_weight = float(baseline_decay), float(entropy_weight)
        self.sizes = [len(d.choices) for d in space.decision_list]
        self.logits = [np.zeros(n) for n in self.sizes]
        self._m = [np.zeros(n) for n in self.sizes]
        self._v = [np.zeros(n) for n in self.sizes]
        self._t = 0
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float]] = []
        self.updates = 0

    # -- the policy ---------------------------------------------------------------------------

    def probabilities(self) -> list[np.ndarray]:
        out = []
        for z in self.logits:
            p = np.exp(z - z.max())
            out.append(p / p.sum())
        return out

    def entropy(self) -> float:
        """Mean entropy per decision, in nats."""
        return float(np.mean([-(p * np.log(np.maximum(p, 1e-300))).sum() for p in self.probabilities()]))

    def max_entropy(self) -> float:
        return float(np.mean([np.log(n) for n in self.sizes]))

    def most_likely(self) -> Arch:
        """The arch of each decision's most probable choice."""
        return self.space.decode_indices([int(np.argmax(z)) for z in self.logits])

    def sample_indices(self, n: int) -> np.ndarray:
        """``n`` choice-index vectors drawn from the policy (the controller's own generator)."""
        return np.stack([self.rng.choice(len(p), size=n, p=p) for p in self.probabilities()], axis=1)

    def propose(self) -> Arch:
        return self.space.decode_indices([int(i) for i in self.sample_indices(1)[0]])

    # -- learning -----------------------------------------------------------------------------

    def learn(self, proposal: Proposal, reward: float) -> None:
        self.buffer.append((self.space.indices(self.space.encode(proposal.arch)), float(reward)))
        if len(self.buffer) >= self.batch_size:
            self.update(*zip(*self.buffer))
            self.buffer.clear()

    def update(self, actions, rewards) -> None:
        """One Adam step on the REINFORCE objective of a batch of (choice indices, reward)."""
        adv = []
        for r in rewards:  # the baseline moves reward by reward, as in the mnas controller
            self.baseline = r if self.baseline is None else self.baseline_decay * self.baseline + (
                1 - self.baseline_decay) * r
            adv.append(r - self.baseline)
        probs = self.probabilities()
        self._t += 1
        for d, p in enumerate(probs):
            g = np.zeros_like(p)
            for a, av in zip(actions, adv):  # d log p(a) / d logits = onehot(a) - p
                g[a[d]] += av
                g -= av * p
            g /= len(adv)
            if self.entropy_weight:  # d H / d logits = -p (log p + H)
                logp = np.log(np.maximum(p, 1e-300))
                g += self.entropy_weight * (-p * (logp + -(p * logp).sum()))
            # gradient ascent through Adam (Keras's defaults)
            m = self._m[d] = 0.9 * self._m[d] + 0.1 * g
            v = self._v[d] = 0.999 * self._v[d] + 0.001 * g * g
            mhat, vhat = m / (1 - 0.9 ** self._t), v / (1 - 0.999 ** self._t)
            self.logits[d] = self.logits[d] + self.learning_rate * mhat / (np.sqrt(vhat) + 1e-7)
        self.updates += 1

    def summary(self) -> dict[str, Any]:
        return super().summary() | {"entropy": self.entropy(), "baseline": self.baseline, "updates": self.updates,
                                    "learning_rate": self.learning_rate, "batch_size": self.batch_size}

