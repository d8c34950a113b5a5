"""Tokens per second of ``embed-corpus``: the local engine, and Ray with 1 and 2 CPU workers.

Writes a synthetic long-document corpus (deterministic) and, unless ``--model`` is given, a
random-weight checkpoint of lodestone-base geometry (768 hidden, 12 layers, 12 heads, 3072 GLU
intermediate; ``weights/mosaic-tiny``'s tokenizer and pooling), starts one local Ray
(``ray.init(num_cpus=...)``) and times :func:`mosaic_encoder.corpus.embed_corpus` into a fresh
output directory per repeat. A run's time covers everything after the input scan: for Ray that
includes starting the actor processes and loading one model in each. Needs ``pip install -e
".[ray]"``.

    python benchmarks/embed_corpus.py --docs 8 --words 700 --rows-per-shard 2 --repeats 3 \
        --out benchmarks/cpu/embed-corpus.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import platform
import random
import statistics
import tempfile
from pathlib import Path

import torch

from safetensors.torch import save_file

from mosaic_encoder import MosaicBertModel, MosaicConfig
from mosaic_encoder.corpus import CorpusSettings, embed_corpus
from mosaic_encoder.sentence import SentenceEncoder

TINY = Path(__file__).resolve().parent.parent / "weights" / "mosaic-tiny"
BASE_GEOMETRY = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072}
WORDS = ("long context embedding model corpus filing paper code base attention linear bias "
         "document token sentence vector search retrieval index query passage section").split()


def write_corpus(path: Path, docs: int, words: int, seed: int = 0) -> list[str]:
    """``docs`` JSON-lines documents of ``words // 2`` to ``words`` random words each."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words)))
             for _ in range(docs)]
    with path.open("w", encoding="utf-8") as stream:
        stream.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
    return texts


def write_base_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of lodestone-base geometry with mosaic-tiny's tokenizer."""
    shutil.copytree(TINY, directory)
    values = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    values.update(BASE_GEOMETRY)
    (directory / "config.json").write_text(json.dumps(values, indent=1), encoding="utf-8")
    torch.manual_seed(seed)
    model = MosaicBertModel(MosaicConfig.from_dict(values))
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()},
              directory / "model.safetensors")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint directory (default: random weights, lodestone-base "
                             "geometry)")
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--words", type=int, default=700)
    parser.add_argument("--rows-per-shard", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="embed-corpus-bench-"))
    corpus = work / "corpus.jsonl"
    texts = write_corpus(corpus, args.docs, args.words)
    model = args.model or str(write_base_checkpoint(work / "base-random"))
    encoder = SentenceEncoder(model)
    tokens = sum(len(ids) for ids in encoder.tokenizer.encode_ids(texts)[0])
    settings = CorpusSettings(model, max_tokens_per_batch=args.max_tokens,
                              rows_per_shard=args.rows_per_shard)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="WARNING")
    configs = [("local", {}), ("ray, 1 worker", {"num_workers": 1}),
               ("ray, 2 workers", {"num_workers": 2})]
    rows = []
    for name, options in configs:
        seconds = []
        for repeat in range(args.repeats):
            engine = "local" if name == "local" else "ray"
            summary = embed_corpus(corpus, work / f"{engine}-{len(rows)}-{repeat}", settings,
                                   engine, **options)
            seconds.append(summary.seconds)
        median = statistics.median(seconds)
        rows.append({"engine": name, "seconds": seconds, "median_s": median,
                     "tokens_per_s": tokens / median})
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["vs_local"] = row["tokens_per_s"] / base
    ray.shutdown()
    result = {"model": args.model or "random weights, lodestone-base geometry", "docs": args.docs, "tokens": tokens,
              "rows_per_shard": args.rows_per_shard, "max_tokens": args.max_tokens,
              "torch_threads_local": torch.get_num_threads(), "ray_cpus": args.num_cpus,
              "ray": ray.__version__, "torch": torch.__version__, "cpus": os.cpu_count(),
              "machine": platform.platform(), "load_average": os.getloadavg(), "rows": rows}
    print("| engine | median s (runs) | tokens/s | vs local |\n|---|---:|---:|---:|")
    for row in rows:
        runs = ", ".join(f"{s:.1f}" for s in row["seconds"])
        print(f"| {row['engine']} | {row['median_s']:.1f} ({runs}) | {row['tokens_per_s']:,.0f} | "
              f"{row['vs_local']:.2f} |")
    print(f"{tokens} tokens in {args.docs} documents; load average {os.getloadavg()}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
