"""Seeing BPTT at work (placeholder, completed below)."""
