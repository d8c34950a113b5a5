"""Contrastive fine-tuning of sentence encoders, as lodestone-base-4096-v1 was trained.

Modules: :mod:`.config` (the run's settings), :mod:`.data` (pair/triplet files and the batch
schedule), :mod:`.model` (encoder + pooling), :mod:`.loss` (in-batch negatives), :mod:`.gradcache`
(large batches in small chunks), :mod:`.distributed` (torchrun processes), :mod:`.checkpoints`,
:mod:`.evaluation` (held-out retrieval), :mod:`.loop` (:func:`~.loop.train`), :mod:`.cli`,
:mod:`.memory` (activation memory of a step) and :mod:`.demo` (offline demonstration data from the
standard library's docstrings).
"""
