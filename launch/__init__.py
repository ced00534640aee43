"""The one training recipe: `accelerate launch launch/train.py --tower mixer` (config, data pipeline
and its resumable streams, contrastive step, checkpoints, run record, launch configs, SLURM script,
resume benchmark)."""
