import numpy as np
import pytest

from npgated.models.generation import generate, next_token_distribution
from npgated.models.rnnlm import BetterRnnlm, Rnnlm

V = 13


@pytest.fixture
def model():
    return Rnnlm(V, 6, 6, seed=0)


def test_same_seed_same_text(model, xp_name):
    a = generate(model, [1, 2], 20, seed=5)
    b = generate(model, [1, 2], 20, seed=5)
    assert a == b and len(a) == 22 and a[:2] == [1, 2]
    assert generate(model, [1, 2], 20, seed=6) != a


def test_skip_ids_never_sampled(model):
    out = generate(model, 3, 200, skip_ids=[0, 1, 2], seed=0)
    assert not set(out[1:]) & {0, 1, 2}


def test_top_k_restricts_to_k_most_likely():
    logits = np.arange(10.0)
    p = next_token_distribution(logits, top_k=3)
    assert np.count_nonzero(p) == 3 and p[7:].sum() == pytest.approx(1.0)
    assert next_token_distribution(logits, top_k=1).argmax() == 9


def test_temperature():
    logits = np.array([0.0, 1.0, 2.0])
    cold = next_token_distribution(logits, temperature=0.1)
    hot = next_token_distribution(logits, temperature=10.0)
    assert cold[2] > 0.99 and hot.max() < 0.4
    with pytest.raises(ValueError, match="temperature"):
        next_token_distribution(logits, temperature=0)


def test_skip_everything_is_an_error():
    with pytest.raises(ValueError, match="every token"):
        next_token_distribution(np.zeros(3), skip_ids=[0, 1, 2])


def test_generation_restores_mode_and_state():
    model = BetterRnnlm(V, 6, 6, dropout_ratio=0.5, seed=0)
    model.train()
    generate(model, [1], 5, seed=0)
    assert model.training
    assert all(getattr(layer, "h", None) is None for layer in model.layers.values())
    model.eval()
    generate(model, [1], 5, seed=0)
    assert not model.training


def test_model_method(model):
    assert model.generate([4], 3, seed=1) == generate(model, [4], 3, seed=1)
