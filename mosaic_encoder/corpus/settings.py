"""How a corpus is embedded: one typed record that the driver hands to every worker."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..files import regular_file


@dataclass(frozen=True)
class CorpusSettings:
    """Model, numerics and batching of an ``embed-corpus`` run (plain values: it travels to workers).

    Embeddings are float32 and L2-normalised whatever ``dtype`` the model computes in.
    ``max_tokens_per_batch`` is the encoder's padded-token budget per batch; within each shard the
    texts are sorted by length and batched by :meth:`SentenceEncoder.encode`.
    """

    model: str
    dtype: str = "float32"
    device: str = "cpu"
    attention: str = "auto"
    batch_size: int = 32
    max_tokens_per_batch: int | None = None
    max_seq_length: int | None = None
    text_column: str = "text"
    id_column: str = "id"
    rows_per_shard: int = 1000

    def __post_init__(self):
        from ..dtypes import resolve_dtype

        resolve_dtype(self.dtype)

    def encoder(self):
        """A :class:`SentenceEncoder` for these settings (loads the model)."""
        from ..sentence import SentenceEncoder

        return SentenceEncoder(self.model, dtype=self.dtype, device=self.device,
                               attention=self.attention, max_seq_length=self.max_seq_length)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weights_digest(transformer_dir: Path) -> str:
    """sha256 over the ``*.safetensors`` files of a checkpoint (names and bytes, sorted by name).

    It tells two checkpoints apart whatever directory they are copied to.
    """
    files = sorted(transformer_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"checkpoint directory {transformer_dir} holds no .safetensors "
                              f"weights.")
    return files_digest(files, "weights file")


def files_digest(files: list[Path], what: str) -> str:
    """sha256 over the names and bytes of ``files``; a FIFO or device among them is refused (it
    would block or never end)."""
    digest = hashlib.sha256()
    for file in files:
        regular_file(file, what)
        digest.update(file.name.encode() + b"\0")
        try:
            with file.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as err:
            raise CheckpointError(f"{what} {file} cannot be read ({err.strerror}).") from None
    return digest.hexdigest()
