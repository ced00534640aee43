"""The one training recipe: `accelerate launch launch/train.py --tower mixer` (config, data pipeline,
contrastive step, checkpoints, run record, launch configs)."""
