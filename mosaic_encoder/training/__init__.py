"""Training: contrastive fine-tuning of sentence encoders (as lodestone-base-4096-v1 was trained),
on a loop that other tasks (masked-LM pretraining) share.

Modules: :mod:`.loop` (the generic loop and its :class:`~.loop.Task` protocol), :mod:`.run_dir`
(checkpoints, published model and log), :mod:`.rng` (RNG state), :mod:`.distributed` (torchrun
processes), :mod:`.contrastive` (the contrastive task, :func:`~.contrastive.train`),
:mod:`.config` (its settings), :mod:`.data` (pair/triplet files and the batch schedule),
:mod:`.model` (encoder + pooling), :mod:`.loss` (in-batch negatives), :mod:`.gradcache` (large
batches in small chunks), :mod:`.evaluation` (held-out retrieval), :mod:`.cli`, :mod:`.memory`
(activation memory of a step) and :mod:`.demo` (offline demonstration data from the standard
library's docstrings).
"""
