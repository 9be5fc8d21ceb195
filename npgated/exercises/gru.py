"""The GRU exercise, both variants: ``gru_step_backward`` (B1..B9) and ``TimeGRU.backward``.

The reference is :mod:`npgated.layers.gru`; the equations are quoted from the Notes of its
``gru_step_backward``, and the template's cache has the fields of its ``GRUStepCache``
(``mask``, npgated's recurrent-dropout mask, is always None here). The check runs
``reset_after=False`` (Cho et al. 2014, d2l) and ``reset_after=True`` (cuDNN, PyTorch).
"""

from npgated.exercises.recurrent import RecurrentExercise

CELL_SOURCE = '''
class GRUStepCache(NamedTuple):
    """What gru_step_backward needs from gru_step_forward ((N, D) or (N, H) arrays)."""

    x: np.ndarray
    h_prev: np.ndarray
    r: np.ndarray  # reset gate
    z: np.ndarray  # update gate
    n: np.ndarray  # candidate state
    hn: object  # reset_after=True: h_prev @ Wh_n + b_hn (what r multiplies); else None
    reset_after: bool
    mask: object = None  # npgated's recurrent-dropout mask: always None in this exercise


def gru_step_forward(x, h_prev, Wx, Wh, b, reset_after=False):
    """One GRU step, either variant (complete).

    Parameters
    ----------
    x : (N, D) array
    h_prev : (N, H) array
    Wx : (D, 3H) array
    Wh : (H, 3H) array
        Gate blocks r, z, n (columns [:H] reset, [H:2H] update, [2H:] candidate).
    b : (3H,) array for reset_after=False; (2, 3H) for reset_after=True
        (row 0 the input-side bias b_x, row 1 the hidden-side bias b_h).
    reset_after : bool
        False: Cho et al. 2014 / d2l, the reset gate before the product with Wh_n.
        True: cuDNN / PyTorch nn.GRU, the reset gate after it.

    Returns
    -------
    h_next : (N, H) array
    cache : GRUStepCache

    Notes
    -----
    Blocks of a (., 3H) array: _r = [:, :H], _z = [:, H:2H], _n = [:, 2H:]; for
    reset_after=False b_x = b and b_h = 0. There is no mask here: hm = h_prev.

    F1  a_rz = x @ Wx_rz + h_prev @ Wh_rz + b_x_rz + b_h_rz
    F2  r = sigma(a_r),  z = sigma(a_z)
    F3  reset_after=False:  a_n = x @ Wx_n + (r * h_prev) @ Wh_n + b_x_n
        reset_after=True:   hn = h_prev @ Wh_n + b_h_n;  a_n = x @ Wx_n + b_x_n + r * hn
    F4  n = tanh(a_n)
    F5  h_next = z * h_prev + (1 - z) * n
    """
    H = h_prev.shape[1]
    if reset_after:
        ax = x @ Wx + b[0]  # F1, F3 (the input side of all three blocks)
        ah = h_prev @ Wh + b[1]  # F1, F3 (the hidden side of all three blocks)
        r = sigmoid(ax[:, :H] + ah[:, :H])  # F1, F2
        z = sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])  # F1, F2
        hn = ah[:, 2 * H:]  # F3
        n = np.tanh(ax[:, 2 * H:] + r * hn)  # F3, F4
    else:
        a_rz = x @ Wx[:, :2 * H] + h_prev @ Wh[:, :2 * H] + b[:2 * H]  # F1
        r = sigmoid(a_rz[:, :H])  # F2
        z = sigmoid(a_rz[:, H:])  # F2
        hn = None
        n = np.tanh(x @ Wx[:, 2 * H:] + (r * h_prev) @ Wh[:, 2 * H:] + b[2 * H:])  # F3, F4
    h_next = z * h_prev + (1 - z) * n  # F5
    return h_next, GRUStepCache(x, h_prev, r, z, n, hn, bool(reset_after))
'''

BACKWARD_SIGNATURE = '''def gru_step_backward(dh_next, cache, Wx, Wh):
    """Part 1: the gradients of one GRU step, either variant (cache.reset_after says which).

    Parameters
    ----------
    dh_next : (N, H) array
        Gradient of the loss w.r.t. h_next (from the output and from step t+1).
    cache : GRUStepCache
        From gru_step_forward.
    Wx : (D, 3H) array
    Wh : (H, 3H) array

    Returns
    -------
    dx : (N, D) array
    dh_prev : (N, H) array
    dWx : (D, 3H) array
    dWh : (H, 3H) array
    db : (3H,) array, or (2, 3H) for reset_after=True
        In this order. Keep the gate blocks in the order r, z, n.
    """
    x, h_prev, r, z, n, hn, reset_after, mask = cache
'''

EXERCISE = RecurrentExercise(
    cell="gru",
    title="GRU",
    gates="rzn",
    n_state=1,
    module="npgated.layers.gru",
    step_forward="gru_step_forward",
    step_backward="gru_step_backward",
    time_class="TimeGRU",
    equations_from="gru_step_backward",
    cell_source=CELL_SOURCE,
    backward_signature=BACKWARD_SIGNATURE,
    notes="""
    Here mask is None, so hm = h_prev and B9 is dh_prev += dhm. sigma' = sigma * (1 - sigma),
    tanh' = 1 - tanh**2. Both variants are checked: reset_after=False and reset_after=True.
    """,
    variants=[{}, {"reset_after": True}],
)
