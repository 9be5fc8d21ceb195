"""The vanilla RNN exercise: ``rnn_step_backward`` (B1..B6) and ``TimeRNN.backward`` (BPTT).

The reference is :mod:`npgated.layers.rnn`; the equations are quoted from the Notes of its
``rnn_step_forward``, and the template's cache has the fields of its ``RNNStepCache``.
"""

from npgated.exercises.recurrent import RecurrentExercise

CELL_SOURCE = '''
class RNNStepCache(NamedTuple):
    """What rnn_step_backward needs from rnn_step_forward."""

    x: np.ndarray  # (N, D)
    h_prev: np.ndarray  # (N, H)
    h_next: np.ndarray  # (N, H), tanh(a): its derivative is 1 - h_next**2


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    """One step of the vanilla (Elman) RNN (complete).

    Parameters
    ----------
    x : (N, D) array
    h_prev : (N, H) array
    Wx : (D, H) array
    Wh : (H, H) array
    b : (H,) array

    Returns
    -------
    h_next : (N, H) array
    cache : RNNStepCache

    Notes
    -----
    F1  a = x @ Wx + h_prev @ Wh + b
    F2  h_next = tanh(a)
    """
    a = x @ Wx + h_prev @ Wh + b  # F1
    h_next = np.tanh(a)  # F2
    return h_next, RNNStepCache(x, h_prev, h_next)
'''

BACKWARD_SIGNATURE = '''def rnn_step_backward(dh_next, cache, Wx, Wh):
    """Part 1: the gradients of one RNN step.

    Parameters
    ----------
    dh_next : (N, H) array
        Gradient of the loss w.r.t. h_next (from the output and from step t+1).
    cache : RNNStepCache
        From rnn_step_forward.
    Wx : (D, H) array
    Wh : (H, H) array

    Returns
    -------
    dx : (N, D) array
    dh_prev : (N, H) array
    dWx : (D, H) array
    dWh : (H, H) array
    db : (H,) array
        In this order.
    """
    x, h_prev, h_next = cache
'''

EXERCISE = RecurrentExercise(
    cell="rnn",
    title="vanilla RNN",
    gates="",
    n_state=1,
    module="npgated.layers.rnn",
    step_forward="rnn_step_forward",
    step_backward="rnn_step_backward",
    time_class="TimeRNN",
    equations_from="rnn_step_forward",
    cell_source=CELL_SOURCE,
    backward_signature=BACKWARD_SIGNATURE,
)
