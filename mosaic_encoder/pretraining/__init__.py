"""Masked-LM pretraining of MosaicBERT-family variants.

- :mod:`.initialise`: fresh models from a configuration (BERT's initialisation), ``init``;
- :mod:`.model_files`: masked-LM checkpoint directories;
- :mod:`.documents`, :mod:`.packing`, :mod:`.stream`: corpus files to ordered training sequences;
- :mod:`.masking`: 80/10/10 corruption;
- :mod:`.objective`: the loss, with the decoder on masked tokens only;
- :mod:`.config`, :mod:`.task`, :mod:`.run`: a run, as a task of the shared training loop;
- :mod:`.evaluation`: held-out loss and accuracy at several lengths, ``eval-mlm``;
- :mod:`.cli`: the ``init``, ``pretrain`` and ``eval-mlm`` commands;
- :mod:`.stdlib_corpus`, :mod:`.wordpiece`, :mod:`.experiment`: the ALiBi experiment in miniature;
- :mod:`.reference`: ``transformers``' BertForMaskedLM on the same weights, the yardstick.
"""
