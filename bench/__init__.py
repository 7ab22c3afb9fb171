"""Benchmarks and reproductions, apart from the train layer (``train/``: what a user runs to train):

* ``python -m bench.suite``: every memory on every memory task and POPGym's, scored on one scale (:mod:`bench.suite`);
* ``python -m bench.assoc``: the paper's associative retrieval, supervised (:mod:`bench.assoc`);
* ``python -m bench.speed``: env, memory-core and training speed and memory, as ratios (:mod:`bench.speed`).
"""
