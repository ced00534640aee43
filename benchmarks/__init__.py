"""Evaluation runners, each `python -m benchmarks.<name> --help`: imagenet_zeroshot, sts, retrieval,
throughput. One Encoder interface (`benchmarks.encoder`) for our checkpoints and reference models;
provenance-stamped JSON results (`benchmarks.provenance`); every data set in `benchmarks.data`."""
