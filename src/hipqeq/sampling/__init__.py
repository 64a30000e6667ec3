"""Sampling of configurations: xTB-driven MD (:mod:`.md`), rattles and strains
(:mod:`.rattle`), reproducible seeds (:mod:`.seeds`) and the per-job entry points the
CLI calls (:mod:`.jobs`)."""

from hipqeq.sampling.jobs import built_structure, md_settings, sample_md_job, sample_rattle_job
from hipqeq.sampling.md import MDOutcome, MDSettings, run_md
from hipqeq.sampling.rattle import rattle_frames
from hipqeq.sampling.seeds import derive_seed

__all__ = ["MDOutcome", "MDSettings", "built_structure", "derive_seed", "md_settings", "rattle_frames",
           "run_md", "sample_md_job", "sample_rattle_job"]
