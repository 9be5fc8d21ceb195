"""The LSTM exercise: ``lstm_step_backward`` (B1..B11) and ``TimeLSTM.backward`` (BPTT).

The reference is :mod:`npgated.layers.lstm`; the equations are quoted from the Notes of its
``lstm_step_forward``, and the template's cache has the fields of its ``LSTMStepCache``.
"""

from npgated.exercises.recurrent import RecurrentExercise

CELL_SOURCE = '''
class LSTMStepCache(NamedTuple):
    """What lstm_step_backward needs from lstm_step_forward ((N, D) or (N, H) arrays)."""

    x: np.ndarray
    h_prev: np.ndarray
    c_prev: np.ndarray
    i: np.ndarray  # input gate
    f: np.ndarray  # forget gate
    g: np.ndarray  # candidate cell
    o: np.ndarray  # output gate
    tanh_c: np.ndarray  # tanh(c_next)


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    """One LSTM step (complete).

    Parameters
    ----------
    x : (N, D) array
    h_prev, c_prev : (N, H) arrays
    Wx : (D, 4H) array
    Wh : (H, 4H) array
    b : (4H,) array
        Gate blocks i, f, g, o (columns k*H:(k+1)*H for k = 0..3).

    Returns
    -------
    h_next, c_next : (N, H) arrays
    cache : LSTMStepCache

    Notes
    -----
    With sigma the logistic sigmoid:

    F1  a = x @ Wx + h_prev @ Wh + b          (N, 4H) = [a_i | a_f | a_g | a_o]
    F2  i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
    F3  c_next = f * c_prev + i * g
    F4  h_next = o * tanh(c_next)
    """
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b  # F1
    i = sigmoid(a[:, :H])  # F2
    f = sigmoid(a[:, H:2 * H])  # F2
    g = np.tanh(a[:, 2 * H:3 * H])  # F2
    o = sigmoid(a[:, 3 * H:])  # F2
    c_next = f * c_prev + i * g  # F3
    tanh_c = np.tanh(c_next)  # F4
    h_next = o * tanh_c  # F4
    return h_next, c_next, LSTMStepCache(x, h_prev, c_prev, i, f, g, o, tanh_c)
'''

BACKWARD_SIGNATURE = '''def lstm_step_backward(dh_next, dc_next, cache, Wx, Wh):
    """Part 1: the gradients of one LSTM step.

    Parameters
    ----------
    dh_next, dc_next : (N, H) arrays
        Gradients of the loss w.r.t. h_next and c_next (from the output and from step t+1).
    cache : LSTMStepCache
        From lstm_step_forward.
    Wx : (D, 4H) array
    Wh : (H, 4H) array

    Returns
    -------
    dx : (N, D) array
    dh_prev, dc_prev : (N, H) arrays
    dWx : (D, 4H) array
    dWh : (H, 4H) array
    db : (4H,) array
        In this order. Keep the gate blocks in the order i, f, g, o.
    """
    x, h_prev, c_prev, i, f, g, o, tanh_c = cache
'''

EXERCISE = RecurrentExercise(
    cell="lstm",
    title="LSTM",
    gates="ifgo",
    n_state=2,
    module="npgated.layers.lstm",
    step_forward="lstm_step_forward",
    step_backward="lstm_step_backward",
    time_class="TimeLSTM",
    equations_from="lstm_step_forward",
    cell_source=CELL_SOURCE,
    backward_signature=BACKWARD_SIGNATURE,
    notes="""
    sigma' = sigma * (1 - sigma), tanh' = 1 - tanh**2, tanh_c = tanh(c_next); da is the
    (N, 4H) concatenation [da_i | da_f | da_g | da_o] (np.concatenate(..., axis=1)).
    """,
)
