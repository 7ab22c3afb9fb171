"""Shared test set-up."""

import torch as th

# Two torch threads on a busy 2-core machine make small recurrent models many times slower.
th.set_num_threads(1)
