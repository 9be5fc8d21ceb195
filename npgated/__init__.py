"""npgated: gated recurrent networks (RNN, LSTM, GRU) in NumPy, every backward pass by hand.

The package is laid out like the chapters it accompanies::

    npgated.backend     the NumPy/CuPy switch (the library's only global)
    npgated.functional  sigmoid, softmax, log-softmax, cross-entropy as pure functions
    npgated.layers      book-style layers: params/grads, forward/backward, TBPTT state
    npgated.gradcheck   central finite differences to check every backward pass
    npgated.models      language models (Rnnlm, BetterRnnlm)
    npgated.optim       optimizers and global-norm clipping
    npgated.data        Penn Treebank loading and truncated-BPTT batching
    npgated.training    the training loop, evaluation, schedules, checkpoints
"""

__version__ = "0.1.0"
