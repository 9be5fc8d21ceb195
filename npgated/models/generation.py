"""Sampling text from a language model, one token at a time, state carried between tokens.

The prompt ``start_ids`` is read in one forward pass (batch of 1); then, repeatedly, the
distribution over the next token is

    p = softmax(logits / temperature)        restricted to the top_k most likely tokens,
                                             with the ``skip_ids`` (e.g. <unk>) removed,

a token is drawn from ``p`` with a seeded generator, and fed back in. Temperature < 1
sharpens the distribution (towards greedy decoding), > 1 flattens it.

The rule is written twice. :func:`next_token_distribution` is the readable reference: it
returns p as a fresh array. :class:`Sampler` computes the same p (up to rounding) in
buffers allocated once and draws from it by inverse CDF, with no NumPy array allocated per
token; :func:`generate` uses it together with :class:`~npgated.models.stepping.Stepper`,
which computes the model's next logits in preallocated buffers too. The tests hold
``Sampler`` to ``next_token_distribution`` and the stepper to ``model.predict``.

The draw is by inverse CDF: u uniform in [0, 1) from one ``rng.random()``, scaled by the
total weight, and the token is the first whose cumulative weight exceeds it. That is also
how NumPy's ``Generator.choice(V, p=p)`` (which npgated used before) draws: one
``random()``, then a search in ``cumsum(p) / cumsum(p)[-1]``. The two can differ only when
u falls within rounding of a boundary between two tokens, so a seed gives the text it gave
before (checked with NumPy 2.4: 10,000 draws, all equal; NumPy does not promise that its
``choice`` keeps this algorithm, and npgated no longer depends on it).
"""

from __future__ import annotations

import math

import numpy as np

from npgated import backend, checks
from npgated.models.stepping import Stepper, unsupported_reason


def _check_sampling(V, temperature, top_k, skip_ids):
    """Validate the sampling options for a vocabulary of V; return (top_k, skip (K,) int64)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    skip = np.unique(np.asarray(list(skip_ids), dtype=np.int64))
    if skip.size and (skip.min() < 0 or skip.max() >= V):
        raise ValueError(f"skip_ids must be in [0, {V}), got {sorted(skip.tolist())}")
    if skip.size == V:
        raise ValueError("skip_ids removes every token: nothing left to sample")
    if top_k is not None:
        top_k = checks.check_positive_int(top_k, "top_k")
    return top_k, skip


def next_token_distribution(logits, temperature=1.0, top_k=None, skip_ids=()):
    """The sampling distribution for one step, as a host float64 array of shape (V,).

    Parameters
    ----------
    logits : (V,) array
    temperature : float > 0
    top_k : int or None
        Keep only the ``top_k`` most likely tokens (after removing ``skip_ids``).
    skip_ids : iterable of int
        Token ids never to sample.

    Notes
    -----
    ::

        S1  z = logits / temperature                     in float64
        S2  z[skip_ids] = -inf
        S3  z[z < kth] = -inf                            kth: the top_k-th largest z
        S4  p = exp(z - max(z)) / sum(exp(z - max(z)))
    """
    V = logits.shape[0]
    top_k, skip = _check_sampling(V, temperature, top_k, skip_ids)
    z = backend.to_cpu(logits).astype(np.float64) / temperature  # S1
    if skip.size:
        z[skip] = -np.inf  # S2
    if top_k is not None and top_k < V:
        cutoff = np.partition(z, V - top_k)[V - top_k]  # S3
        z[z < cutoff] = -np.inf  # S3
    if not np.isfinite(z).any():
        raise ValueError("skip_ids removes every token: nothing left to sample")
    z -= z.max()  # S4
    p = np.exp(z)  # S4
    return p / p.sum()  # S4


class Sampler:
    """Draw token ids from logits by the rule of :func:`next_token_distribution`, in place.

    Parameters
    ----------
    vocab_size : int (V)
    temperature, top_k, skip_ids : see :func:`next_token_distribution` (validated here,
        once).
    seed : int or numpy.random.Generator, optional
        The generator of the draws (one ``rng.random()`` per token).

    Attributes
    ----------
    weights : (V,) float64 array
        After :meth:`prepare` or :meth:`draw`: exp(z - max(z)) of S4, zero for excluded
        tokens; ``weights / weights.sum()`` is ``next_token_distribution``'s p.
    cdf : (V,) float64 array
        After :meth:`draw`: ``cumsum(weights)``.

    Notes
    -----
    S1-S4 as in :func:`next_token_distribution`, in buffers made at construction, then::

        S5  cdf = cumsum(weights)
        S6  u = rng.random() * cdf[-1];  token = #{v : cdf[v] <= u}

    S6 is ``np.searchsorted(cdf, u, side="right")``, the first v with cdf[v] > u, written
    as a comparison and a count because searchsorted returns a fresh array and has no
    ``out=`` (both are one pass over V, as the cumsum is). Excluded tokens have weight 0,
    so their cdf equals their predecessor's and they are never the first to exceed u.

    Nothing is allocated per draw on the NumPy backend, except with ``top_k``: S3 uses the
    in-place ``ndarray.partition`` on a work copy, and NumPy allocates one 8-byte array
    per call for its sorted copy of the partition index (the reference's ``np.partition``
    allocates a (V,) copy; ``argpartition`` has no ``out=``). Logits on a device are copied
    to the host first (one (V,) host array per draw).
    """

    def __init__(self, vocab_size, temperature=1.0, top_k=None, skip_ids=(), seed=None):
        V = self.vocab_size = checks.check_positive_int(vocab_size, "vocab_size")
        top_k, skip = _check_sampling(V, temperature, top_k, skip_ids)
        self.temperature, self.top_k = float(temperature), top_k
        self.rng = backend.default_rng(seed)
        # 0-d arrays: a Python float operand would make NumPy allocate one per call
        self._temperature = np.array(float(temperature))
        self._neg_inf = np.array(-np.inf)
        self._zmax = np.empty(())
        self._u = np.empty(())
        self._skip = skip.astype(np.intp)
        self.weights = np.empty(V)  # z of S1-S3, then the weights of S4
        self.cdf = np.empty(V)
        self._mask = np.empty(V, dtype=bool)
        self._kth = None
        if top_k is not None and top_k < V:
            self._work = np.empty(V)  # partitioned copy of z
            self._kth = np.array([V - top_k], dtype=np.intp)
            self._cutoff = self._work[V - top_k, ...]  # a 0-d view: the top_k-th largest

    def prepare(self, logits):
        """S1-S4 into :attr:`weights` (returned: valid until the next call).

        Parameters
        ----------
        logits : (V,) float array (host or device)
        """
        if logits.shape != (self.vocab_size,):
            raise ValueError(
                f"logits must have shape ({self.vocab_size},), got {tuple(logits.shape)}"
            )
        if backend.is_device_array(logits):
            logits = backend.to_cpu(logits)
        z = self.weights
        np.copyto(z, logits)  # S1  (cast to float64 into the buffer)
        z /= self._temperature  # S1
        if self._skip.size:
            z[self._skip] = self._neg_inf  # S2
        if self._kth is not None:
            np.copyto(self._work, z)  # S3
            self._work.partition(self._kth)  # S3  in place: _cutoff is the kth largest
            np.less(z, self._cutoff, out=self._mask)  # S3
            np.copyto(z, self._neg_inf, where=self._mask)  # S3
        np.max(z, out=self._zmax)  # S4
        z -= self._zmax  # S4
        np.exp(z, out=z)  # S4
        return z

    def draw(self, logits) -> int:
        """One token id drawn from the distribution of ``logits`` (S1-S6).

        Parameters
        ----------
        logits : (V,) float array (host or device)

        Returns
        -------
        int in [0, V)
        """
        self.prepare(logits)
        np.cumsum(self.weights, out=self.cdf)  # S5
        total = float(self.cdf[-1])
        if not (math.isfinite(total) and total > 0):  # math: np.isfinite would allocate
            raise ValueError(
                f"cannot sample: the logits are not finite (total weight {total}); "
                "the model's parameters may have diverged"
            )
        self._u[()] = self.rng.random() * total  # S6
        np.less_equal(self.cdf, self._u, out=self._mask)  # S6
        token = int(np.count_nonzero(self._mask))  # S6
        if token == self.vocab_size:  # u rounded up to the total: take the last token
            token = int(np.flatnonzero(self.weights)[-1])  # with weight (rare, allocates)
        return token


def generate(
    model, start_ids, length, temperature=1.0, top_k=None, skip_ids=(), seed=None, on_token=None
):
    """Sample ``length`` token ids following the prompt ``start_ids``.

    The model's recurrent state is reset first and the model is put in eval mode for the
    duration (dropout off); its previous mode is restored afterwards, and its state is
    reset again at the end.

    Parameters
    ----------
    model : LanguageModel
    start_ids : int or sequence of int
        The prompt (at least one id).
    length : int
        Number of tokens to sample after the prompt.
    temperature, top_k, skip_ids : see :func:`next_token_distribution`.
    seed : int or numpy.random.Generator, optional
        Same seed, same text (on every backend: the draws are made on the host).
    on_token : callable, optional
        Called with each sampled id (an int) as soon as it is drawn, before the model steps
        on it: ``npgated generate`` prints a character-level sample as it comes.

    Returns
    -------
    list of int: the prompt followed by the ``length`` sampled ids.

    Notes
    -----
    The prompt is read by one ``model.predict`` (the normal forward); then a
    :class:`~npgated.models.stepping.Stepper` takes over the layers' state and each token
    is one :meth:`Sampler.draw` and one ``Stepper.step``, neither of which allocates a
    NumPy array on the NumPy backend (with ``top_k``: one 8-byte array, see
    :class:`Sampler`). A model the stepper does not know
    (:func:`~npgated.models.stepping.unsupported_reason`) is stepped by ``model.predict``
    on (1, 1) batches instead, with the same draws.
    """
    prompt = [int(start_ids)] if np.isscalar(start_ids) else [int(i) for i in start_ids]
    if not prompt:
        raise ValueError("start_ids must contain at least one token id")
    if int(length) < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    sampler = Sampler(model.vocab_size, temperature, top_k, skip_ids, seed)
    was_training = model.training
    model.eval()
    model.reset_state()
    try:
        out = list(prompt)
        logits = model.predict(np.asarray([prompt], dtype=np.int64))[0, -1]
        stepper = None
        if unsupported_reason(model) is None:
            stepper = Stepper(model)
            stepper.load_state()  # the state after the prompt; the stepper carries it on
        for _ in range(int(length)):
            token = sampler.draw(logits)
            out.append(token)
            if on_token is not None:
                on_token(token)
            if stepper is not None:
                logits = stepper.step(token)
            else:
                logits = model.predict(np.asarray([[token]], dtype=np.int64))[0, -1]
    finally:
        model.reset_state()
        model.train(was_training)
    return out
