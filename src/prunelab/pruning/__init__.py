"""Pruning: selection (one global ranking for one-shot, iterative and gradual), masks, physical removal,
schedules, gradual pruning while training, network pruning spaces."""
