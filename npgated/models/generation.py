"""Sampling text from a language model, one token at a time, state carried between tokens.

The prompt ``start_ids`` is read in one forward pass (batch of 1); then, repeatedly, the
distribution over the next token is

    p = softmax(logits / temperature)        restricted to the top_k most likely tokens,
                                             with the ``skip_ids`` (e.g. <unk>) removed,

a token is drawn from ``p`` with a seeded generator, and fed back in. Temperature < 1
sharpens the distribution (towards greedy decoding), > 1 flattens it.
"""

from __future__ import annotations

import numpy as np

from npgated import backend, checks


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
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = backend.to_cpu(logits).astype(np.float64) / temperature
    V = z.shape[0]
    skip = np.asarray(list(skip_ids), dtype=np.int64)
    if skip.size:
        if skip.min() < 0 or skip.max() >= V:
            raise ValueError(f"skip_ids must be in [0, {V}), got {sorted(skip.tolist())}")
        z[skip] = -np.inf
    if top_k is not None:
        top_k = checks.check_positive_int(top_k, "top_k")
        if top_k < V:
            cutoff = np.partition(z, V - top_k)[V - top_k]
            z[z < cutoff] = -np.inf
    if not np.isfinite(z).any():
        raise ValueError("skip_ids removes every token: nothing left to sample")
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def generate(model, start_ids, length, temperature=1.0, top_k=None, skip_ids=(), seed=None):
    """Sample ``length`` token ids following the prompt ``start_ids``.

    The model's recurrent state is reset first and the model is put in eval mode for the
    duration (dropout off); its previous mode is restored afterwards.

    Parameters
    ----------
    model : LanguageModel
    start_ids : int or sequence of int
        The prompt (at least one id).
    length : int
        Number of tokens to sample after the prompt.
    temperature, top_k, skip_ids : see :func:`next_token_distribution`.
    seed : int or numpy.random.Generator, optional
        Same seed, same text.

    Returns
    -------
    list of int: the prompt followed by the ``length`` sampled ids.
    """
    prompt = [int(start_ids)] if np.isscalar(start_ids) else [int(i) for i in start_ids]
    if not prompt:
        raise ValueError("start_ids must contain at least one token id")
    if int(length) < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    rng = backend.default_rng(seed)
    was_training = model.training
    model.eval()
    model.reset_state()
    try:
        out = list(prompt)
        logits = model.predict(np.asarray([prompt], dtype=np.int64))[0, -1]
        for _ in range(int(length)):
            p = next_token_distribution(logits, temperature, top_k, skip_ids)
            token = int(rng.choice(p.shape[0], p=p))
            out.append(token)
            logits = model.predict(np.asarray([[token]], dtype=np.int64))[0, -1]
    finally:
        model.reset_state()
        model.train(was_training)
    return out
