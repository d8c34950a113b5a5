"""The names the benchmarks run and report by: subcommands, implementations, batch compositions
and windowing settings. Nothing here imports torch, so that the command line builds without it."""

COMMAND = "python -m mosaic_encoder.bench"
SUBCOMMANDS = ("attention", "model", "mlm", "compiled", "compile", "report", "plots")
# The implementations each benchmark compares, by benchmark.
IMPLEMENTATIONS = {"attention": ("ours-triton", "ours-sdpa", "sdpa-dense", "flex", "naive"),
                   "model": ("ours", "baseline"), "mlm": ("ours", "transformers-sdpa"),
                   "compiled": ("regional", "whole", "onnxruntime")}
COMPOSITIONS = ("single", "equal", "mixed")
# "on" is the kernel's default (windowing where it pays, automatic); "always" forces the
# Triton kernel's windowing at every length (ours-sdpa treats it as on).
WINDOW_SETTINGS = {"on": (True,), "off": (False,), "both": (True, False), "always": ("always",),
                   "all": (True, "always", False)}
