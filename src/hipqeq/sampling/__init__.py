"""Sampling of configurations: xTB-driven MD (:mod:`.md`), rattles and strains
(:mod:`.rattle`) and the per-job entry points the CLI calls (:mod:`.jobs`); seeds come
from :func:`hipqeq.seeds.derive_seed`."""

from hipqeq.sampling.jobs import md_settings, sample_md_job, sample_rattle_job
from hipqeq.sampling.md import MDOutcome, MDSettings, run_md
from hipqeq.sampling.rattle import rattle_frames

__all__ = ["MDOutcome", "MDSettings", "md_settings", "rattle_frames", "run_md", "sample_md_job", "sample_rattle_job"]
