# Configuration checks and the small input functions the rules share. Path and name
# logic lives in hipqeq.plan (tested); this file only wires it in.
import os

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from hipqeq import plan
from hipqeq.config import validate_config
from hipqeq.engines import XTB_ENGINE_SETTINGS
from hipqeq.errors import ConfigError
from hipqeq.validation.pipeline import OVERALL_FIGURES


def config_file_path():
    """The one YAML file the hipqeq verbs read their settings from."""
    given = workflow.overwrite_configfiles
    if len(given) > 1:
        raise WorkflowError("hipqeq reads one config file: pass a single --configfile")
    path = str(given[0]) if given else "config/config.yaml"
    with open(path) as handle:
        on_disk = yaml.safe_load(handle)
    if on_disk != config:
        # The verbs read the file, so command-line --config overrides would be ignored
        # by them: refuse rather than run a study the files do not describe.
        raise WorkflowError(f"--config overrides are not supported: copy {path}, edit it and "
                            "pass it with --configfile")
    return path


CONFIG_FILE = config_file_path()
# envs/*.post-deploy.sh install this checkout of hipqeq into each rule's conda env
os.environ["HIPQEQ_SOURCE"] = workflow.basedir
validate(config, schema="../schemas/config.schema.yaml")
try:
    validate_config(config, source=CONFIG_FILE)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

STRUCTURES = plan.structure_names(config)
SEEDS = [seed["name"] for seed in config["structures"]["seeds"]]
TEMPERATURES = dict(zip(plan.temperature_tags(config), config["sampling"]["temperatures_K"]))
REPLICAS = list(range(config["sampling"]["replicas"]))
XTB_CHUNKS = list(range(plan.n_chunks(config["selection"]["n_xtb"], config["xtb"]["chunk_size"])))
XTB_TEST_CHUNKS = plan.test_label_chunks(config)
DFT_TEST_CHUNKS = plan.test_dft_chunks(config)
DFT_CHUNKS = list(range(plan.n_chunks(config["selection"]["n_dft"], config["dft"]["chunk_size"])))
MEMBERS = plan.model_members(config)
# What the xTB selection depends on: not n_dft (rule select_dft), n_xtb_test or dft_test,
# so that changing them labels the DFT or held-out frames only (Snakemake's params trigger)
SELECTION = {key: value for key, value in config["selection"].items()
             if key not in ("n_dft", "n_xtb_test", "dft_test")}
# What the HIP-NN training jobs depend on: not the MACE peer's section, so that enabling
# or tuning the peer retrains only the peer (Snakemake's params trigger)
HIPNN_TRAINING = {key: value for key, value in config["training"].items() if key != "peer"}
PEER_MEMBERS = plan.peer_members(config)
MD_STRUCTURES = config["validation"]["md_structures"]
FIGURES = OVERALL_FIGURES
# the xTB labelling engine's environment (CP2K's adds the cp2k binary to the xTB one)
XTB_ENV = "../../envs/cp2k.yaml" if config["xtb"]["engine"] == "cp2k" else "../../envs/xtb.yaml"
# the DFT engine's: PySCF's, or CP2K's for dft.source cp2k
DFT_ENV = "../../envs/cp2k.yaml" if config["dft"]["source"] == "cp2k" else "../../envs/dft.yaml"
#: conda environment of each level of theory's labelling engine (the gates label too)
LABEL_ENVS = {"xtb": XTB_ENV, "dft": DFT_ENV}


wildcard_constraints:
    structure="[A-Za-z][A-Za-z0-9_]*",
    seed="[A-Za-z][A-Za-z0-9_]*",
    level="xtb|dft",
    temperature="[0-9p]+",
    replica="[0-9]+",
    chunk="[0-9]+",
    member="[0-9]+",
    kind="4g|baseline",


def sampled_frames(wildcards):
    """Every MD and rattle output the selection reads."""
    md = expand("results/sampling/{structure}/T{temperature}_r{replica}.parquet",
                structure=STRUCTURES, temperature=TEMPERATURES, replica=REPLICAS)
    rattle = expand("results/sampling/{structure}/rattle.parquet", structure=STRUCTURES)
    return md + rattle


def dft_chunks(wildcards):
    """DFT charge chunks: PySCF jobs, or one ingested external set."""
    if config["dft"]["source"] == "external":
        return ["results/labels/dft/external.parquet"]
    return expand("results/labels/dft/chunk_{chunk}.parquet", chunk=DFT_CHUNKS)


def charge_dataset(wildcards):
    """The dataset whose charges the charge model learns (training.charge_reference):
    the DFT set, or the xTB labels the models train on (plan.training_dataset)."""
    if config["training"]["charge_reference"] == "xtb":
        return plan.training_dataset(config)
    return "results/datasets/dft.parquet"


def models_of(kind):
    return expand("results/models/{kind}_{member}", kind=kind, member=MEMBERS)


def peer_models(wildcards=None):
    """The MACE peer model directories (none unless training.peer.enabled)."""
    return expand("results/models/mace_{member}", member=PEER_MEMBERS)


def md_summaries(wildcards=None):
    return expand("results/validation/md/{kind}_{structure}.json", kind=["4g", "baseline"],
                  structure=MD_STRUCTURES)


def gated_levels():
    """Levels of theory whose labelling settings are gated (an external DFT set is not computed here)."""
    if not config["convergence"]["enabled"]:
        return []
    levels = config["convergence"]["levels"]
    return [lv for lv in levels if lv == "xtb" or config["dft"]["source"] != "external"]


def convergence_outputs(level=None):
    """The gate reports of ``level`` (all gated levels when None): labelling waits for them."""
    levels = gated_levels() if level is None else [lv for lv in gated_levels() if lv == level]
    return expand("results/convergence/{level}/{name}.json", level=levels, name=plan.gated_structures(config))


def split_inputs(wildcards):
    """Whose parents the study's split covers: the built structures, and an ingested
    external DFT set (its structures are not built here)."""
    datasets = ["results/structures/structures.parquet"]
    if config["dft"]["source"] == "external":
        datasets.append("results/labels/dft/external.parquet")
    return {"datasets": datasets}


def final_outputs():
    # The labelled chunks are targets themselves: deleting one re-labels just that
    # chunk and re-runs what depends on it (an intermediate file would not be redone).
    return (["results/validation/metrics.json", "results/datasets/xtb.parquet",
             "results/datasets/dft.parquet"] + dft_chunks(None)
            + expand("results/labels/xtb/chunk_{chunk}.parquet", chunk=XTB_CHUNKS)
            + expand("results/labels/xtb_test/chunk_{chunk}.parquet", chunk=XTB_TEST_CHUNKS)
            + expand("results/labels/dft_test/chunk_{chunk}.parquet", chunk=DFT_TEST_CHUNKS)
            + models_of("4g") + models_of("baseline") + peer_models() + convergence_outputs())
