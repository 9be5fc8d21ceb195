"""Seeing BPTT at work: gradient flow through time, long-range tasks, and the offline demo.

    npgated.analysis.tasks          the adding, first-token and copy problems (generated in
                                    code) and a small model to train on them
    npgated.analysis.gradient_flow  ||dL/dh_t|| from real backward passes, the matrix-power
                                    experiment, the clipping trace
    npgated.analysis.plots          the figures, saved as PNG (Agg, no display)
    npgated.analysis.demo           ``npgated demo``: all of it, with a table and figures

The submodules import the layers (and, for the figures, matplotlib) only when used.
"""
