import pytest

from npgated.training.config import PRESETS, TrainConfig, preset


def test_presets_match_the_book_and_zaremba():
    small = preset("book-small")
    assert (
        small.model,
        small.wordvec_size,
        small.hidden_size,
        small.batch_size,
        small.time_size,
        small.lr,
        small.max_grad_norm,
        small.epochs,
    ) == ("Rnnlm", 100, 100, 20, 35, 20.0, 0.25, 4)
    better = preset("book-better")
    assert (
        better.num_layers,
        better.hidden_size,
        better.dropout,
        better.tie_weights,
        better.epochs,
        better.schedule,
    ) == (2, 650, 0.5, True, 40, "plateau")
    z = preset("zaremba-small")
    assert (
        z.hidden_size,
        z.num_layers,
        z.time_size,
        z.lr,
        z.max_grad_norm,
        z.init,
        z.epochs,
        z.schedule,
        z.lr_decay_start,
    ) == (200, 2, 20, 20.0, 0.25, "0.1", 13, "step", 4)
    assert set(PRESETS) == {
        "book-small",
        "book-better",
        "zaremba-small",
        "cpu-hour",
        "char-small",
        "char-lstm",
    }


def test_cpu_hour_preset_regularizes_the_recurrence():
    c = preset("cpu-hour")
    assert c.time_budget == 60.0 and c.model == "BetterRnnlm" and c.tie_weights
    assert all(
        getattr(c, n) > 0
        for n in ("dropout", "recurrent_dropout", "embedding_dropout", "ar", "tar")
    )
    assert c.schedule == "budget-linear"
    kw = c.model_kwargs(50)
    assert (
        kw["recurrent_dropout"],
        kw["weight_drop"],
        kw["embedding_dropout"],
        kw["ar"],
        kw["tar"],
    ) == (c.recurrent_dropout, c.weight_drop, c.embedding_dropout, c.ar, c.tar)
    assert "ar" not in TrainConfig().model_kwargs(50)  # Rnnlm gets none of them


def test_overrides_and_roundtrip():
    c = preset("book-small", hidden_size=50, cell="gru")
    assert c.hidden_size == 50 and c.cell == "gru"
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(cell="transformer"), "cell='transformer' is not valid"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(model="BetterRnnlm", dropout=1.0), "dropout must be in"),
        (dict(lr=-1.0), "lr must be > 0"),
        (dict(model="Rnnlm", dropout=0.5), "use --model BetterRnnlm"),
        (
            dict(model="BetterRnnlm", tie_weights=True, hidden_size=10, wordvec_size=20),
            "hidden_size == wordvec_size",
        ),
        (dict(init="abc"), "init must be"),
        (dict(model="Rnnlm", ar=2.0), "Rnnlm has no ar"),
        (dict(model="Rnnlm", weight_drop=0.5, tar=1.0), "Rnnlm has no weight_drop, tar"),
        (
            dict(model="BetterRnnlm", recurrent_dropout=1.0),
            r"recurrent_dropout must be in \[0, 1\)",
        ),
        (dict(model="BetterRnnlm", embedding_dropout=-0.1), "embedding_dropout must be in"),
        (dict(model="BetterRnnlm", tar=-1.0), "tar must be a finite number >= 0"),
        (dict(asgd_nonmono=-1), "asgd_nonmono must be an integer >= 0"),
        (dict(time_budget=0.0), "time_budget must be a positive number of minutes"),
        (dict(schedule="budget-linear"), "give --time-budget MINUTES"),
    ],
)
def test_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


def test_unknown_preset():
    with pytest.raises(ValueError, match="book-small, book-better, zaremba-small"):
        preset("huge")
