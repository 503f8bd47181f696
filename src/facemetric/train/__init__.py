"""Training: trainer loop, optimizers, schedules, EMA, checkpoints and run directories."""
