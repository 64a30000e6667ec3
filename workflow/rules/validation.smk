# validate: MD stability runs of each model, then parity plots and metrics against
# xTB and DFT on the held-out parents, with the baseline (and the MACE peer when
# training.peer.enabled) on the same axes.


rule md_check:
    input:
        models=lambda wildcards: models_of(wildcards.kind),
        structures="results/structures/structures.parquet",
    output:
        summary="results/validation/md/{kind}_{structure}.json",
        trajectory="results/validation/md/{kind}_{structure}.traj",
    params:
        settings=config["validation"],
    log:
        "logs/md_check/{kind}_{structure}.log",
    benchmark:
        "logs/md_check/{kind}_{structure}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    shell:
        "hipqeq md --config {CONFIG_FILE} --model {input.models} --structures {input.structures}"
        " --name {wildcards.structure} --output {output.summary} --trajectory {output.trajectory}"
        " > {log} 2>&1"


rule validate:
    input:
        **plan.validation_inputs(config),
        models=models_of("4g"),
        baselines=models_of("baseline"),
        peers=peer_models(),
        md=md_summaries(),
    output:
        metrics=report("results/validation/metrics.json", category="Metrics",
                       caption="../report/metrics.rst"),
        table=report("results/validation/metrics.md", category="Metrics",
                     caption="../report/metrics.rst"),
        figures=[report(f"results/validation/{name}.png", category="Parity and stability",
                        caption="../report/parity.rst") for name in FIGURES],
        pdfs=[f"results/validation/{name}.pdf" for name in FIGURES],
        parity=report(directory("results/validation/parity"), patterns=["{name}.png"],
                      category="Parity and stability", caption="../report/parity.rst"),
        families=report(directory("results/validation/families"), patterns=["{name}.png"],
                        category="Parity per family", caption="../report/parity.rst"),
    params:
        settings=config["validation"],
        datasets=" ".join(plan.validate_options(plan.validation_inputs(config))),
    log:
        "logs/validate.log",
    benchmark:
        "logs/validate.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "hipqeq validate --config {CONFIG_FILE} {params.datasets} --model {input.models} --baseline {input.baselines}"
        " --peer {input.peers} --md {input.md} --output-dir results/validation > {log} 2>&1"
