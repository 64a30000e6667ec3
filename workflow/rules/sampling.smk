# sample: xTB-driven MD per (structure, temperature, replica) and a rattle/strain
# sampler per structure; select: farthest-point selection of frames for labelling.


rule sample_md:
    input:
        "results/structures/structures.parquet",
    output:
        frames="results/sampling/{structure}/T{temperature}_r{replica}.parquet",
        summary="results/sampling/{structure}/T{temperature}_r{replica}.summary.json",
    params:
        settings=[config["seed"], config["sampling"], {key: config["xtb"][key] for key in XTB_ENGINE_SETTINGS}],
        temperature_K=lambda wildcards: TEMPERATURES[wildcards.temperature],
        # the trajectory is the job's checkpoint: not an output, so Snakemake keeps it
        # when a job fails or is killed and the next attempt resumes from it (only a
        # trajectory of the same settings and engine is resumed; after a change of the
        # MD code itself, delete results/sampling/*/*.traj to start afresh)
        trajectory="results/sampling/{structure}/T{temperature}_r{replica}.traj",
    log:
        "logs/sample_md/{structure}_T{temperature}_r{replica}.log",
    benchmark:
        "logs/sample_md/{structure}_T{temperature}_r{replica}.benchmark.tsv",
    conda:
        "../../envs/xtb.yaml"
    threads: 1  # many small jobs locally; profiles/slurm gives cluster jobs more (set-threads)
    resources:
        mem_mb=4000,
        runtime=1440,
    shell:
        "hipqeq sample md --config {CONFIG_FILE} --structures {input} --name {wildcards.structure}"
        " --temperature-K {params.temperature_K} --replica {wildcards.replica}"
        " --output {output.frames} --trajectory {params.trajectory} > {log} 2>&1"


rule sample_rattle:
    input:
        "results/structures/structures.parquet",
    output:
        "results/sampling/{structure}/rattle.parquet",
    params:
        settings=[config["seed"], config["sampling"]["rattle"]],
    log:
        "logs/sample_rattle/{structure}.log",
    benchmark:
        "logs/sample_rattle/{structure}.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "hipqeq sample rattle --config {CONFIG_FILE} --structures {input} --name {wildcards.structure}"
        " --output {output} > {log} 2>&1"


rule select:
    input:
        sampled_frames,
    output:
        "results/selection/xtb.parquet",
    params:
        settings=[config["seed"], SELECTION],
    log:
        "logs/select.log",
    benchmark:
        "logs/select.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "hipqeq select --config {CONFIG_FILE} --output-xtb {output} {input} > {log} 2>&1"


rule select_dft:
    input:
        "results/selection/xtb.parquet",
    output:
        "results/selection/dft.parquet",
    params:
        n_dft=config["selection"]["n_dft"],
    log:
        "logs/select_dft.log",
    benchmark:
        "logs/select_dft.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "hipqeq select-dft --config {CONFIG_FILE} --selection {input} --output {output} > {log} 2>&1"
