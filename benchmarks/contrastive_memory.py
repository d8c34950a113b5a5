"""The largest contrastive batch at 2048 tokens in 24 GiB: peak RSS measured on scaled-down steps,
extrapolated to lodestone-base.

Each case is one ``mosaic-encoder train`` step (``train()`` in a fresh process, so ``ru_maxrss``
is that step's peak: model, AdamW state, gradient cache, checkpoint save) on a random-weight
checkpoint of lodestone-base width (768 hidden, 12 heads, 3072 GLU intermediate) with fewer layers
and shorter texts (128 and 256 tokens), every text exactly S tokens, the gradient cache embedding
one text per forward pass and gradient checkpointing on. The cases separate the terms of

    RSS = R0 + 16 bytes x parameters + S x (e + layers x a) + B x b(S)

(R0: the interpreter and libraries, measured at the smallest case minus its parameters; a: the
activation bytes per token and layer that one chunk keeps; b: the bytes each pair adds, its
tokens and embeddings), which are then evaluated at 12 layers and S = 2048 and solved for B,
adding the (B, B) score matrix and its gradient (float32, x4).

    python benchmarks/contrastive_memory.py --out benchmarks/cpu/contrastive-memory.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from mosaic_encoder import MosaicBertModel, MosaicConfig

TINY = Path(__file__).resolve().parent.parent / "weights" / "mosaic-tiny"
WIDTH = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}
BASE_LAYERS, CARD_LENGTH, CARD_BATCH, BUDGET = 12, 2048, 16, 24 * 2 ** 30
SHORT, LONG = 128, 256  # the scaled-down lengths
WORDS = ("river engine violin harbor garden planet castle market winter forest bridge letter "
         "circle mirror island signal").split()


def write_checkpoint(directory: Path, layers: int) -> tuple[Path, int]:
    """A random-weight checkpoint of lodestone-base width with ``layers`` layers; its parameter
    count."""
    import shutil

    shutil.copytree(TINY, directory)
    values = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    values.update(WIDTH, num_hidden_layers=layers)
    (directory / "config.json").write_text(json.dumps(values), encoding="utf-8")
    torch.manual_seed(0)
    model = MosaicBertModel(MosaicConfig.from_dict(values))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              directory / "model.safetensors")
    return directory, sum(p.numel() for p in model.parameters())


def run_case(model: Path, length: int, batch: int, checkpointing: bool, work: Path) -> int:
    """Peak RSS (bytes) of a process that trains one step of ``batch`` pairs of ``length``
    tokens."""
    from mosaic_encoder.training.config import TrainConfig
    from mosaic_encoder.training.contrastive import train

    rng = random.Random(0)
    rows = [{"anchor": " ".join(rng.choice(WORDS) for _ in range(length)),
             "positive": " ".join(rng.choice(WORDS) for _ in range(length))}
            for _ in range(batch)]
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train(TrainConfig(model=model, data=(data,), output=work / "run", batch_size=batch,
                      max_seq_length=length, steps=1, warmup_steps=0, chunk_size=1,
                      gradient_checkpointing=checkpointing, save_every=0, eval_every=0,
                      progress=False, tensorboard=False))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(layers: int, length: int, batch: int, checkpointing: bool) -> dict:
    with tempfile.TemporaryDirectory() as work:
        model, parameters = write_checkpoint(Path(work) / "model", layers)
        command = [sys.executable, __file__, "--case", str(model), str(length), str(batch),
                   str(int(checkpointing)), work]
        rss = int(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return {"layers": layers, "length": length, "batch": batch, "checkpointing": checkpointing,
            "parameters": parameters, "peak_rss_bytes": rss}


def extrapolate(cases: list[dict], checkpointing: bool) -> dict:
    """The per-token, per-layer and per-pair figures of one setting, and the largest batch."""
    at = {(c["layers"], c["length"], c["batch"]): c for c in cases
          if c["checkpointing"] == checkpointing}
    small, long, wide, shallow = (at[2, SHORT, 4], at[2, LONG, 4], at[2, LONG, 8],
                                  at[1, LONG, 4])

    def without_parameters(case):
        return case["peak_rss_bytes"] - 16 * case["parameters"]

    per_token = (without_parameters(long) - without_parameters(small)) / (LONG - SHORT)  # e + 2a
    per_token_layer = (without_parameters(long) - without_parameters(shallow)) / LONG  # a
    per_token_rest = per_token - 2 * per_token_layer  # e
    per_pair = (without_parameters(wide) - without_parameters(long)) / 4 * CARD_LENGTH / LONG
    base = without_parameters(small) - SHORT * per_token - 4 * per_pair * SHORT / CARD_LENGTH
    parameters = small["parameters"] + (BASE_LAYERS - 2) * (small["parameters"]
                                                            - shallow["parameters"])
    fixed = base + 16 * parameters + CARD_LENGTH * (per_token_rest
                                                    + BASE_LAYERS * per_token_layer)
    # 16 B**2 + per_pair B + fixed <= BUDGET
    largest = int((-per_pair + math.sqrt(per_pair ** 2 + 64 * (BUDGET - fixed))) / 32)
    return {"checkpointing": checkpointing, "interpreter_bytes": base,
            "activation_bytes_per_token_and_layer": per_token_layer,
            "activation_bytes_per_token_outside_layers": per_token_rest,
            "bytes_per_pair_at_2048": per_pair, "base_parameters": parameters,
            "fixed_bytes_at_2048": fixed, "largest_batch_at_2048_in_24GiB": largest,
            "card_batch": CARD_BATCH}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("contrastive-memory.json"))
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        model, length, batch, checkpointing, work = args.case
        print(run_case(Path(model), int(length), int(batch), bool(int(checkpointing)),
                       Path(work)))
        return
    cases = [measure(layers, length, batch, True)
             for layers, length, batch in ((2, SHORT, 4), (2, LONG, 4), (2, LONG, 8),
                                           (1, LONG, 4))]
    report = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "machine": platform.machine(), "torch": torch.__version__, "cases": cases,
              "extrapolated": extrapolate(cases, True)}
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report["extrapolated"], indent=1))


if __name__ == "__main__":
    main()
