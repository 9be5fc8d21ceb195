"""Dot-product attention by hand: one forward, one backward, and a gradient check (seconds).

    python examples/attention_layer.py

A batch of 2 "encoder" sequences of 5 states, the second padded after 3 positions, and 3
"decoder" states that attend to them (the layer of the book's chapter 8, all decoder steps
at once). Prints the attention weights of the padded sequence (0 at the padding), and the
relative errors of the hand-derived gradients against central differences (about 1e-10),
then one summary line (the padded encoder states get exactly 0 gradient from attention; the
inputs at the padding still reach the valid positions through the encoder's backward
direction, which reads the sequence from its end).
"""

import numpy as np

from npgated import gradcheck
from npgated.layers.attention import TimeAttention
from npgated.layers.bidirectional import TimeBiLSTM

rng = np.random.default_rng(0)
N, T_enc, T_dec, D, H = 2, 5, 3, 4, 3

# A bidirectional LSTM encoder (2H features per position), decoder states of the same size.
encoder = TimeBiLSTM(
    *(rng.normal(scale=0.5, size=s) for s in [(D, 4 * H), (H, 4 * H), (4 * H,)] * 2)
)
xs = rng.normal(size=(N, T_enc, D))
hs_dec = rng.normal(size=(N, T_dec, 2 * H))
valid_lens = np.array([5, 3])  # sequence 1 is padded after 3 positions

attention = TimeAttention()


def forward():
    return attention.forward(encoder.forward(xs), hs_dec, valid_lens=valid_lens)


contexts = forward()  # (N, T_dec, 2H)
np.set_printoptions(precision=3, suppress=True)
print("attention weights of sequence 1 (rows: decoder steps, columns: encoder positions):")
print(attention.weights[1])

# Backward: attention first, then the encoder receives the gradient of its states.
dcontexts = rng.normal(size=contexts.shape)


def analytic():
    encoder.zero_grads()
    forward()
    dhs_enc, dhs_dec = attention.backward(dcontexts)
    dxs = encoder.backward(dhs_enc)
    grads = {"xs": dxs, "hs_dec": dhs_dec}
    grads.update(zip(encoder.param_names, encoder.grads))
    return grads


def loss():
    return float((forward() * dcontexts).sum())


arrays = {"xs": xs, "hs_dec": hs_dec, **dict(zip(encoder.param_names, encoder.params))}
results = gradcheck.check_gradients(loss, analytic, arrays)
print(gradcheck.report(results))
worst = max(r.error for r in results)

forward()
dhs_enc, _ = attention.backward(dcontexts)
padded = dhs_enc[1, 3:]  # the encoder states at the padding get exactly 0 from attention
print(
    f"attention over a BiLSTM encoder: max relative gradient error {worst:.1e} over "
    f"{len(results)} arrays; largest gradient at the padded encoder states "
    f"{np.abs(padded).max():.1e}; {'OK' if worst < 1e-6 and not padded.any() else 'FAILED'}"
)
