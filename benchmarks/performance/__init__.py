"""System-performance tools: what the code costs in time and memory, not how good a model is (the model
quality benchmarks are the modules of `benchmarks/`). Each is `python -m benchmarks.performance.<name>`:
throughput (a training and inference step, ours vs open_clip's), gpu_check (one GPU: step, MFU, loader,
a short run), gpu_smoke (the risks one GPU retires before a cluster job), loader_bench (the training
loader vs pure decoding), decode_bench (per-core JPEG decode paths), resume_bench (launch to first step
when resuming), classifier_cost (the zero-shot classifier's build time), text_mask_cost (each text
mask's FLOPs, memory and attention kernels). They sit above training in the layer order: they time it.
"""
