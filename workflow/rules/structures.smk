# build: every structure of config.structures, once; the study's split; the convergence
# gates of the labelling settings (one per seed and charged slab; xTB labelling waits for them).


rule build_structures:
    output:
        "results/structures/structures.parquet",
    params:
        settings=config["structures"],  # re-run when the section changes
    log:
        "logs/build_structures.log",
    benchmark:
        "logs/build_structures.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hipqeq build --config {CONFIG_FILE} --output {output} > {log} 2>&1"


rule split:
    input:
        unpack(split_inputs),
        labels=plan.training_dataset(config),  # every member trains on what its fit needs
    output:
        "results/splits.json",
    params:
        settings=[config["seed"], config["training"]["split_fractions"], config["training"]["n_models"]],
    log:
        "logs/split.log",
    benchmark:
        "logs/split.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "hipqeq split --config {CONFIG_FILE} --labels {input.labels} --output {output} {input.datasets}"
        " > {log} 2>&1"


rule check_convergence:
    input:
        "results/structures/structures.parquet",
    output:
        json="results/convergence/{level}/{name}.json",
        table=report("results/convergence/{level}/{name}.csv", category="Convergence gates",
                     subcategory="{level}", caption="../report/convergence_table.rst"),
        plot=report("results/convergence/{level}/{name}.png", category="Convergence gates",
                    subcategory="{level}", caption="../report/convergence.rst"),
    params:
        settings=lambda wildcards: [config["convergence"], config[wildcards.level], config["seed"],
                                    config["training"]["qeq_parameters"]],  # widths of the subtracted E_elec
    log:
        "logs/check_convergence/{level}/{name}.log",
    benchmark:
        "logs/check_convergence/{level}/{name}.benchmark.tsv",
    conda:
        lambda wildcards: LABEL_ENVS[wildcards.level]
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "hipqeq check-convergence --config {CONFIG_FILE} --structures {input}"
        " --name {wildcards.name} --level {wildcards.level} --output {output.json} --table {output.table} --plot {output.plot} > {log} 2>&1"
