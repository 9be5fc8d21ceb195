import pytest

from npgated.training.config import PRESETS, TrainConfig, preset


def test_presets_match_the_book_and_zaremba():
    small = preset("book-small")
    assert (small.model, small.wordvec_size, small.hidden_size, small.batch_size,
            small.time_size, small.lr, small.max_grad_norm, small.epochs) == \
        ("Rnnlm", 100, 100, 20, 35, 20.0, 0.25, 4)
    better = preset("book-better")
    assert (better.num_layers, better.hidden_size, better.dropout, better.tie_weights,
            better.epochs, better.schedule) == (2, 650, 0.5, True, 40, "plateau")
    z = preset("zaremba-small")
    assert (z.hidden_size, z.num_layers, z.time_size, z.lr, z.max_grad_norm, z.init, z.epochs,
            z.schedule, z.lr_decay_start) == (200, 2, 20, 1.0, 5.0, "0.1", 13, "step", 4)
    assert set(PRESETS) == {"book-small", "book-better", "zaremba-small"}


def test_overrides_and_roundtrip():
    c = preset("book-small", hidden_size=50, cell="gru")
    assert c.hidden_size == 50 and c.cell == "gru"
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kw, message", [
    (dict(cell="transformer"), "cell='transformer' is not valid"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(model="BetterRnnlm", dropout=1.0), "dropout must be in"),
    (dict(lr=-1.0), "lr must be > 0"),
    (dict(model="Rnnlm", dropout=0.5), "use --model BetterRnnlm"),
    (dict(model="BetterRnnlm", tie_weights=True, hidden_size=10, wordvec_size=20),
     "hidden_size == wordvec_size"),
    (dict(init="abc"), "init must be"),
])
def test_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


def test_unknown_preset():
    with pytest.raises(ValueError, match="book-small, book-better, zaremba-small"):
        preset("huge")
