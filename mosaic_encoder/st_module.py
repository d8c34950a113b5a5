"""This encoder inside sentence-transformers: a module class and a model factory.

:func:`to_sentence_transformer` builds a real ``sentence_transformers.SentenceTransformer`` whose
first module is :class:`MosaicEncoderModule` (tokenization and the hand-written encoder), followed
by sentence-transformers' own ``Pooling`` and ``Normalize`` modules as the checkpoint's
``modules.json`` lists them. Everything sentence-transformers offers then works on it: ``encode``
with all its arguments, ``similarity``, evaluators, MTEB, ``save``.

sentence-transformers is an optional dependency: this module imports it, ``import mosaic_encoder``
does not (``mosaic_encoder.to_sentence_transformer`` imports this module on first use).

Loading a saved model: since sentence-transformers 6, a module class from outside its own
namespace is imported only with ``trust_remote_code=True``, also for a local directory::

    SentenceTransformer(directory, trust_remote_code=True)

(the code it runs is this installed package's, named in ``modules.json``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import InputModule, Normalize, Pooling

from .api_arguments import path_arg
from .checkpoint import TOKENIZER_FILES, CheckpointDir
from .devices import resolve_device
from .dtypes import DTYPES, resolve_dtype
from .errors import InputError
from .loading import load_model
from .models import unwrap_encoder
from .tokenizer import TextTokenizer, collate

# Our pooling mode names (those of the checkpoints' 1_Pooling/config.json) -> sentence-transformers'.
_POOLING_MODES = {"cls_token": "cls", "max_tokens": "max", "mean_tokens": "mean",
                  "mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}


class MosaicEncoderModule(InputModule):
    """sentence-transformers input module: ``tokenizer.json`` tokenization and the MosaicBERT
    (or classic BERT) encoder of this package.

    ``preprocess`` gives ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, S) int64;
    ``forward`` adds ``token_embeddings`` (B, S, H) in the model's dtype, zeros at padding, for
    the ``Pooling`` module that follows.

    Args:
        model_path: checkpoint directory holding ``config.json``, the weights and
            ``tokenizer.json``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (a ``torch.dtype`` is accepted).
        attention: ``"auto"``, ``"sdpa"`` or ``"triton"``, as for :func:`load_model`.
        max_seq_length: longer inputs are truncated; None keeps them whole.
        do_lower_case: lower-case texts before tokenizing (``sentence_bert_config.json``).
    """

    config_file_name = "sentence_bert_config.json"
    config_keys = ["max_seq_length", "do_lower_case", "dtype", "attention"]
    save_in_root = True

    def __init__(self, model_path: str | Path, dtype: str | torch.dtype = "float32",
                 attention: str = "auto", max_seq_length: int | None = None,
                 do_lower_case: bool = False):
        super().__init__()
        self.model_path = path_arg(model_path, "model_path")
        torch_dtype = resolve_dtype(dtype)
        self.dtype = next(name for name, value in DTYPES.items() if value == torch_dtype)
        self.attention = attention
        self.do_lower_case = bool(do_lower_case)
        self.encoder = unwrap_encoder(load_model(self.model_path, dtype=torch_dtype,
                                                 attention=attention))
        self.max_seq_length = max_seq_length

    @property
    def max_seq_length(self) -> int | None:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        # sentence-transformers sets model.max_seq_length on its first module.
        self._text_tokenizer = TextTokenizer(self.model_path / "tokenizer.json", value,
                                             self.do_lower_case)
        self._max_seq_length = value

    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` (without truncation state; this module truncates)."""
        return self._text_tokenizer._tokenizer

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        """Texts (optionally prefixed with ``prompt``) -> padded (B, S) int64 tensors, and with a
        prompt its length in tokens (``[CLS]`` and the prompt's own, as sentence-transformers
        counts it), which a ``Pooling`` module with ``include_prompt=False`` leaves out."""
        texts = []
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InputError(f"input {index} is a {type(item).__name__}; this encoder embeds "
                                 f"single texts only.")
            texts.append(prompt + item if prompt else item)
        ids, types, _ = self._text_tokenizer.encode_ids(texts)
        batch = collate(ids, types, self._text_tokenizer.pad_token_id)
        features = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                    "token_type_ids": batch.token_type_ids}
        if prompt:
            prompt_ids, _, _ = self._text_tokenizer.encode_ids([prompt])
            features["prompt_length"] = len(prompt_ids[0]) - 1  # without the closing [SEP]
        return features

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        output = self.encoder(features["input_ids"], features["attention_mask"],
                              features.get("token_type_ids"))
        features["token_embeddings"] = output.last_hidden_state
        return features

    def get_word_embedding_dimension(self) -> int:
        return self.encoder.config.hidden_size

    def get_embedding_dimension(self) -> int:
        return self.encoder.config.hidden_size

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write ``config.json``, ``model.safetensors`` (the encoder's own layout, which
        :func:`load_model` reads), the tokenizer files and ``sentence_bert_config.json``."""
        output = Path(output_path)
        output.mkdir(parents=True, exist_ok=True)
        if output.resolve() != self.model_path.resolve():
            shutil.copyfile(self.model_path / "config.json", output / "config.json")
            for name in TOKENIZER_FILES:
                if (self.model_path / name).is_file():
                    shutil.copyfile(self.model_path / name, output / name)
        state = {name: tensor.detach().contiguous().cpu()
                 for name, tensor in self.encoder.state_dict().items()}
        save_file(state, output / "model.safetensors", metadata={"format": "pt"})
        self.save_config(str(output))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None,
             revision=None, local_files_only: bool = False, **kwargs) -> MosaicEncoderModule:
        directory = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token,
                                      cache_folder=cache_folder, revision=revision,
                                      local_files_only=local_files_only)
        config = cls.load_config(model_name_or_path, subfolder=subfolder, token=token,
                                 cache_folder=cache_folder, revision=revision,
                                 local_files_only=local_files_only)
        known = {key: config[key] for key in cls.config_keys if key in config}
        return cls(directory, **known)


def to_sentence_transformer(path: str | Path, dtype: str | torch.dtype = "float32",
                            device: str | torch.device = "cpu", attention: str = "auto",
                            max_seq_length: int | None = None) -> SentenceTransformer:
    """A ``SentenceTransformer`` running this package's encoder on the checkpoint at ``path``.

    Modules: :class:`MosaicEncoderModule`, then ``Pooling`` with the checkpoint's modes (mean
    for a bare checkpoint, as sentence-transformers defaults), then ``Normalize`` when the
    checkpoint's ``modules.json`` lists it. ``max_seq_length`` overrides
    ``sentence_bert_config.json``.

    Its ``encode`` follows sentence-transformers' defaults: ``normalize_embeddings=False``, so
    embeddings are unit length only through the ``Normalize`` module (lodestone has one).
    """
    device = resolve_device(device)
    pipeline = CheckpointDir.open(path).pipeline
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or
                                       not isinstance(max_seq_length, int) or max_seq_length < 2):
        raise InputError(f"max_seq_length must be an integer of at least 2, got {max_seq_length!r}.")
    encoder = MosaicEncoderModule(pipeline.transformer_dir, dtype=dtype, attention=attention,
                                  max_seq_length=pipeline.max_seq_length if max_seq_length is None
                                  else max_seq_length,
                                  do_lower_case=pipeline.do_lower_case)
    modes = [_POOLING_MODES[mode] for mode in pipeline.pooling.modes]
    modules = [encoder, Pooling(encoder.get_embedding_dimension(), modes,
                                include_prompt=pipeline.pooling.include_prompt)]
    if pipeline.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device=str(device))
