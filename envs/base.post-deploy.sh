#!/usr/bin/env bash
# Snakemake runs this once after creating a rule's conda environment (the env files of
# the other engine families link here). It installs the hipqeq checkout the workflow
# runs from (HIPQEQ_SOURCE, set by workflow/rules/common.smk) without touching the
# dependencies conda already resolved.
set -euo pipefail
python -m pip install --no-deps --editable "${HIPQEQ_SOURCE:?run through the hipqeq Snakefile}"
