# Active learning (active_learning.enabled): rounds r >= 1 after round 0 (the xTB-driven
# pipeline). Round r: train a committee on every label so far -> explore with it
# (ML-MD walkers) -> select candidates (a checkpoint: it decides whether round r+1
# exists) -> label them with round 0's xTB verb -> gather with the previous dataset.
# After the last round, gather_active_final collects every label for the study's own
# models (results/models train and validate on it, plan.training_dataset), so nothing
# the rounds labelled is lost to the deployed potential.
# Paths come from hipqeq.plan; a round after the stop decision is never requested.
import json

from hipqeq.active.stop import ends_loop

ACTIVE_ROUNDS = plan.active_rounds(config)
ACTIVE_MEMBERS = list(range(config["active_learning"]["n_models"]))
ACTIVE_CHUNKS = plan.active_chunks(config)
# What a round's jobs depend on: not max_rounds, so that raising it continues a finished
# study without rerunning its rounds (Snakemake's params trigger)
ROUND_SETTINGS = {k: v for k, v in config["active_learning"].items() if k != "max_rounds"}


wildcard_constraints:
    round="[1-9][0-9]*",
    # charge models: per round (r1/models), or once for all rounds (models) when they
    # learn DFT charges; see hipqeq.plan.active_model_dir
    models="models|r[1-9][0-9]*/models",


def active_models(wildcards):
    return [plan.active_model_dir(config, int(wildcards.round), member, "4g") for member in ACTIVE_MEMBERS]


def round_of_models(models):
    """The round whose xTB labels so far a charge model in results/active/{models} learns
    from (``r2/models`` -> 2; ``models``, DFT charges: any, the dataset is fixed)."""
    return int(models.split("/")[0][1:]) if models.startswith("r") else 1


def round_files(wildcards):
    """Each round's files up to the one whose decision stops the loop (checkpoints:
    a round's decision is read once its selection has run)."""
    files = {"deviations": [], "decisions": [], "walkers": [], "validations": [], "datasets": []}
    for round_ in ACTIVE_ROUNDS:
        decision_path = checkpoints.select_candidates.get(round=round_).output.decision
        with open(decision_path) as handle:
            decision = json.load(handle)
        where = plan.round_dir(round_)
        files["deviations"].append(f"{where}/deviations.parquet")
        files["decisions"].append(decision_path)
        files["walkers"].append(f"{where}/walkers.json")
        files["validations"].append(f"{where}/validation.json")
        if decision["n_selected"]:
            files["datasets"].append(plan.active_dataset(round_))
        if ends_loop(decision):
            break
    return files


def active_outputs():
    if not ACTIVE_ROUNDS:
        return []
    return ["results/active/summary.json"]


rule split_active:
    input:
        unpack(split_inputs),
    output:
        "results/active/splits.json",
    params:
        settings=[config["seed"], config["training"]["split_fractions"], config["active_learning"]["n_models"]],
    log:
        "logs/split_active.log",
    benchmark:
        "logs/split_active.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "hipqeq split --config {CONFIG_FILE} --members {params.settings[2]} --output {output} {input.datasets}"
        " > {log} 2>&1"


use rule train_charges as train_active_charges with:
    input:
        dataset=lambda wildcards: plan.active_charge_dataset(config, round_of_models(wildcards.models)),
        splits="results/active/splits.json",
    output:
        directory("results/active/{models}/charges_{member}"),
    log:
        "logs/train_active_charges/{models}_{member}.log",
    benchmark:
        "logs/train_active_charges/{models}_{member}.benchmark.tsv",


use rule train_short_range as train_active_short_range with:
    input:
        dataset=lambda wildcards: plan.active_dataset(int(wildcards.round) - 1),
        splits="results/active/splits.json",
        charge_model=lambda wildcards: plan.active_model_dir(config, int(wildcards.round), int(wildcards.member),
                                                             "charges"),
    output:
        directory("results/active/r{round}/models/4g_{member}"),
    log:
        "logs/train_active_short_range/r{round}_{member}.log",
    benchmark:
        "logs/train_active_short_range/r{round}_{member}.benchmark.tsv",


rule explore:
    input:
        models=active_models,
        structures="results/structures/structures.parquet",
        held_out="results/datasets/xtb.parquet",
        splits="results/active/splits.json",
    output:
        frames="results/active/r{round}/frames.parquet",
        deviations="results/active/r{round}/deviations.parquet",
        walkers="results/active/r{round}/walkers.json",
        validation="results/active/r{round}/validation.json",
    params:
        settings=[config["seed"], ROUND_SETTINGS],
        # each walker's trajectory is its checkpoint: not an output, so a killed job's
        # walkers resume from their last snapshot (sample_md does the same)
        trajectories="results/active/r{round}/walkers",
    log:
        "logs/explore/r{round}.log",
    benchmark:
        "logs/explore/r{round}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=1,
    shell:
        "hipqeq explore --config {CONFIG_FILE} --round {wildcards.round} --model {input.models}"
        " --structures {input.structures} --held-out {input.held_out} --splits {input.splits}"
        " --output {output.frames} --deviations {output.deviations} --summary {output.walkers}"
        " --validation {output.validation} --trajectory-dir {params.trajectories} > {log} 2>&1"


checkpoint select_candidates:
    input:
        frames="results/active/r{round}/frames.parquet",
        deviations="results/active/r{round}/deviations.parquet",
    output:
        selection="results/active/r{round}/selection.parquet",
        decision="results/active/r{round}/decision.json",
    params:
        settings=[ROUND_SETTINGS, SELECTION],
    log:
        "logs/select_candidates/r{round}.log",
    benchmark:
        "logs/select_candidates/r{round}.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "hipqeq select-candidates --config {CONFIG_FILE} --round {wildcards.round} --frames {input.frames}"
        " --deviations {input.deviations} --output {output.selection} --decision {output.decision}"
        " > {log} 2>&1"


use rule label_xtb as label_active with:
    input:
        frames="results/active/r{round}/selection.parquet",
    output:
        "results/active/r{round}/labels/chunk_{chunk}.parquet",
    log:
        "logs/label_active/r{round}_chunk_{chunk}.log",
    benchmark:
        "logs/label_active/r{round}_chunk_{chunk}.benchmark.tsv",


rule gather_active:
    input:
        previous=lambda wildcards: plan.active_dataset(int(wildcards.round) - 1),
        chunks=expand("results/active/r{{round}}/labels/chunk_{chunk}.parquet", chunk=ACTIVE_CHUNKS),
    output:
        dataset="results/active/r{round}/xtb.parquet",
        counts="results/active/r{round}/xtb_counts.json",
    log:
        "logs/gather_active/r{round}.log",
    benchmark:
        "logs/gather_active/r{round}.benchmark.tsv",
    params:
        # the previous rounds' rows (--base) were checked when they were gathered: only
        # this round's labels count towards the limit
        max_failed_fraction=config["selection"]["max_failed_fraction"],
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "hipqeq gather --base {input.previous} {input.chunks} --output {output.dataset} --counts {output.counts}"
        " --max-failed-fraction {params.max_failed_fraction} > {log} 2>&1"


def last_dataset(wildcards):
    return round_files(wildcards)["datasets"][-1:]


def final_round_dataset(wildcards):
    """Every label after the last round that labelled anything (round 0's if none did)."""
    return last_dataset(wildcards) or [plan.active_dataset(0)]


rule gather_active_final:
    # The study's own models (results/models) train on this: every label of every round.
    input:
        final_round_dataset,
    output:
        dataset=plan.ACTIVE_FINAL_DATASET,
        counts="results/active/xtb_counts.json",
    log:
        "logs/gather_active_final.log",
    benchmark:
        "logs/gather_active_final.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "hipqeq gather {input} --output {output.dataset} --counts {output.counts} > {log} 2>&1"


def active_report_arguments(wildcards, input):
    """The report's file arguments (named inputs exist once every checkpoint ran; a
    named input of one file is a string, of several a list)."""
    def files(name):
        value = input.get(name, [])
        return [value] if isinstance(value, str) else list(value)

    parts = [f"--{name} {' '.join(files(name))}" for name in ("deviations", "decisions", "walkers", "validations")]
    return " ".join(parts + [f"--dataset {path}" for path in files("dataset")])


rule active_report:
    input:
        unpack(round_files),
        dataset=last_dataset,
    output:
        summary="results/active/summary.json",
        rounds=report("results/active/rounds.md", category="Active learning", caption="../report/active.rst"),
        fractions=report("results/active/fractions.md", category="Active learning",
                         caption="../report/active.rst"),
        histogram=report("results/active/deviation_histogram.png", category="Active learning",
                         caption="../report/active.rst"),
    params:
        arguments=active_report_arguments,
    log:
        "logs/active_report.log",
    benchmark:
        "logs/active_report.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "hipqeq active-report --config {CONFIG_FILE} {params.arguments} --output-dir results/active > {log} 2>&1"
