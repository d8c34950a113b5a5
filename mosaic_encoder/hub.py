"""Checkpoints named by Hugging Face Hub id (``org/name``), and the Hugging Face cache's layout.

An id resolves as transformers and sentence-transformers resolve it, through ``huggingface_hub``:
the local cache first (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
a download into it when the network is there, never the network with ``HF_HUB_OFFLINE=1``; a
``revision`` (branch, tag or commit) picks the snapshot. Only the files a checkpoint is read from
are downloaded (:data:`CHECKPOINT_FILES`). huggingface_hub is optional: it is imported only when
an id is given, and without it an id is one sentence saying what to install.

The cache keeps a repository in ``models--org--name/``: file contents in ``blobs/``, branch and
tag names in ``refs/``, and one folder per commit in ``snapshots/`` whose files are symlinks into
``../../blobs/``. :func:`cache_repository` recognises a snapshot, so that the symlink checks of
:mod:`.files` accept links that stay inside its ``models--*`` folder and refuse any other.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import CheckpointError

# owner/name, as the Hub allows them: letters, digits, '-', '_', '.', no '--' or '..'.
_REPO_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}",
                      flags=re.ASCII)
# What a checkpoint is read from (configs, tokenizer files, vocab.txt, weights); pickles, ONNX
# and other formats a repository may also hold are not downloaded.
CHECKPOINT_FILES = ["*.json", "*.txt", "*.safetensors"]


def is_hub_id(value: object) -> bool:
    """Whether ``value`` is a string that can name a Hub model (``org/name``); a ``Path`` never
    does. Whether a local directory of that name exists is the caller's question."""
    return isinstance(value, str) and _REPO_ID.fullmatch(value) is not None \
        and not value.endswith((".", "-"))


def cache_repository(directory: Path) -> Path | None:
    """The ``models--org--name`` folder of the Hugging Face cache that resolved ``directory``
    is a snapshot of (or a folder inside one), else None."""
    parts = directory.parts
    for index in range(len(parts) - 2):
        if parts[index].startswith("models--") and parts[index + 1] == "snapshots":
            return Path(*parts[:index + 1])
    return None


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The cache snapshot folder of Hub model ``repo_id`` at ``revision`` (default: main),
    downloaded first when it is not cached and the network allows.

    Raises:
        CheckpointError: one sentence naming the id (and the cache searched, when offline and not
            cached): huggingface_hub missing, no such model or revision, a failed download, a
            snapshot without safetensors weights.
    """
    at = f" at revision {revision}" if revision is not None else ""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import (HfHubHTTPError, LocalEntryNotFoundError,
                                           RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:
        raise CheckpointError(f"{repo_id} is not a local directory, and reading it as a Hugging "
                              f"Face Hub id needs huggingface_hub (pip install "
                              f"huggingface_hub).") from None
    cache = constants.HF_HUB_CACHE
    try:
        folder = Path(snapshot_download(repo_id, revision=revision,
                                        allow_patterns=CHECKPOINT_FILES))
    except LocalEntryNotFoundError as err:
        if type(err).__name__ == "IncompleteSnapshotError":
            raise CheckpointError(f"the Hugging Face cache {cache} holds an incomplete snapshot of "
                                  f"{repo_id}{at} and the Hub cannot be reached to complete "
                                  f"it.") from None
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else \
            "the Hub cannot be reached"
        raise CheckpointError(f"{repo_id}{at} is neither a local directory nor in the Hugging "
                              f"Face cache {cache}, and {reason}; download it once with network "
                              f"access (hf download {repo_id}) or pass a local "
                              f"directory.") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"Hugging Face Hub model {repo_id} has no revision "
                              f"{revision}.") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id} is neither a local directory nor a Hugging Face Hub "
                              f"model this machine may read (a private or gated one needs `hf "
                              f"auth login`).") from None
    except HfHubHTTPError as err:
        raise CheckpointError(f"downloading {repo_id}{at} from the Hugging Face Hub failed "
                              f"({str(err).splitlines()[0][:200]}).") from None
    except OSError as err:
        raise CheckpointError(f"downloading {repo_id}{at} into the Hugging Face cache {cache} "
                              f"failed ({err.strerror or err}).") from None
    if not any(folder.rglob("*.safetensors")):
        raise CheckpointError(f"Hugging Face Hub model {repo_id}{at} has no safetensors weights "
                              f"(snapshot {folder}); if it publishes pytorch_model.bin, download "
                              f"it with `hf download {repo_id} --local-dir DIR` and convert it "
                              f"with `mosaic-encoder convert DIR`.")
    return folder
