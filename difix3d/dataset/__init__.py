"""The paper's tables over whole datasets, and pair curation over lists of scenes: one job per
scene on submitit (SLURM, or its local executor on one machine), then the dataset's table.
Entry point: ``scripts/dataset.py`` (``difix3d.dataset.command``)."""
