"""Training: the loop, evaluation, learning-rate schedules, checkpoints and logging."""
