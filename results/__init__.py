"""Reports from run folders and score files (no model code): `python -m results.report RUN_DIR... --out
DIR`, and the committed reference comparison, `python -m results.drivers.reference`."""
