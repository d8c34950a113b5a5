"""Masked-LM pretraining of MosaicBERT-family variants.

- :mod:`.initialise`: fresh models from a configuration (BERT's initialisation);
- :mod:`.model_files`: masked-LM checkpoint directories;
- :mod:`.documents`, :mod:`.packing`, :mod:`.stream`: corpus files to ordered training sequences;
- :mod:`.masking`: 80/10/10 corruption;
- :mod:`.objective`: the loss on masked tokens only;
- :mod:`.evaluation`: held-out loss and accuracy at several lengths (``eval-mlm``).
"""
