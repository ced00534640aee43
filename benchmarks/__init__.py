"""Evaluation runners, each `python -m benchmarks.<name> --help`: imagenet_zeroshot, sts, retrieval,
word_order. One Encoder interface (`benchmarks.encoder`) for our checkpoints and reference models; one
registry of zero-shot evaluations (`benchmarks.evaluations`) shared with training; provenance-stamped JSON
results (`benchmarks.provenance`); every data set in `benchmarks.data`; system-performance tools
(throughput, gpu_check, ...) in `benchmarks.performance`."""
