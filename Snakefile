# hipqeq workflow: structures -> xTB-driven MD -> selection -> xTB / DFT labels ->
# Parquet datasets -> charge model + short-range model (+ baseline) -> validation
# (-> properties from NPT MD with the potential, when properties.enabled).
#
#   snakemake -n                                   # the production DAG (config/config.yaml)
#   snakemake --cores 2 --configfile config/toy.yaml   # toy run, 2 cores
#   snakemake --profile profiles/slurm             # production on a SLURM cluster
#
# Every rule calls one `hipqeq VERB`; the logic lives in the hipqeq package.
from snakemake.utils import min_version

min_version("9.0")

# A --configfile on the command line replaces this default instead of being merged
# into it (Snakemake would otherwise deep-merge the two files).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/structures.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/labelling.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/properties.smk"
include: "workflow/rules/active.smk"
include: "workflow/rules/slurm.smk"


rule all:
    input:
        final_outputs() + active_outputs() + property_outputs(),
    default_target: True
