# label: xTB single points and DFT charges in chunks (or an ingested external DFT
# set); gather: one Parquet dataset per level of theory, every row kept. With
# selection.n_xtb_test, more frames of the test parents are labelled for validation only
# (with selection.dft_test, with DFT too).


rule label_xtb:
    input:
        frames="results/selection/xtb.parquet",
        gates=convergence_outputs("xtb"),  # a failed gate stops the study before any label
    output:
        "results/labels/xtb/chunk_{chunk}.parquet",
    params:
        settings=config["xtb"],
    log:
        "logs/label_xtb/chunk_{chunk}.log",
    benchmark:
        "logs/label_xtb/chunk_{chunk}.benchmark.tsv",
    conda:
        XTB_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "hipqeq label xtb --config {CONFIG_FILE} --input {input.frames}"
        " --chunk {wildcards.chunk} --output {output} > {log} 2>&1"


rule label_dft:
    input:
        frames="results/selection/dft.parquet",
        gates=convergence_outputs("dft"),
    output:
        "results/labels/dft/chunk_{chunk}.parquet",
    params:
        settings=config["dft"],
    log:
        "logs/label_dft/chunk_{chunk}.log",
    benchmark:
        "logs/label_dft/chunk_{chunk}.benchmark.tsv",
    conda:
        DFT_ENV
    threads: 8
    resources:
        mem_mb=config["dft"]["max_memory_mb"] + 4000,
        runtime=1440,
    shell:
        "hipqeq label dft --config {CONFIG_FILE} --input {input.frames} --chunk {wildcards.chunk}"
        " --output {output} > {log} 2>&1"


rule ingest_dft:
    input:
        config["dft"].get("external", {}).get("path", []),
    output:
        "results/labels/dft/external.parquet",
    params:
        settings=config["dft"],
    log:
        "logs/ingest_dft.log",
    benchmark:
        "logs/ingest_dft.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "hipqeq ingest --config {CONFIG_FILE} --output {output} > {log} 2>&1"


rule gather_xtb:
    input:
        expand("results/labels/xtb/chunk_{chunk}.parquet", chunk=XTB_CHUNKS),
    output:
        dataset="results/datasets/xtb.parquet",
        counts="results/datasets/xtb_counts.json",
    params:
        max_failed_fraction=config["selection"]["max_failed_fraction"],
    log:
        "logs/gather_xtb.log",
    benchmark:
        "logs/gather_xtb.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "hipqeq gather {input} --output {output.dataset} --counts {output.counts}"
        " --max-failed-fraction {params.max_failed_fraction} > {log} 2>&1"


rule gather_dft:
    input:
        dft_chunks,
    output:
        dataset="results/datasets/dft.parquet",
        counts="results/datasets/dft_counts.json",
    params:
        max_failed_fraction=config["selection"]["max_failed_fraction"],
    log:
        "logs/gather_dft.log",
    benchmark:
        "logs/gather_dft.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "hipqeq gather {input} --output {output.dataset} --counts {output.counts}"
        " --max-failed-fraction {params.max_failed_fraction} > {log} 2>&1"


rule select_test:
    input:
        frames=sampled_frames,
        splits=plan.held_out_split(config),
        labelled="results/datasets/xtb.parquet",  # active learning never labels a test parent
    output:
        "results/selection/xtb_test.parquet",
    params:
        settings=[config["selection"]["n_xtb_test"], SELECTION],
    log:
        "logs/select_test.log",
    benchmark:
        "logs/select_test.benchmark.tsv",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "hipqeq select-test --config {CONFIG_FILE} --splits {input.splits} --labelled {input.labelled}"
        " --output {output} {input.frames} > {log} 2>&1"


use rule label_xtb as label_xtb_test with:
    input:
        frames="results/selection/xtb_test.parquet",
        gates=convergence_outputs("xtb"),
    output:
        "results/labels/xtb_test/chunk_{chunk}.parquet",
    log:
        "logs/label_xtb_test/chunk_{chunk}.log",
    benchmark:
        "logs/label_xtb_test/chunk_{chunk}.benchmark.tsv",


use rule gather_xtb as gather_xtb_test with:
    input:
        expand("results/labels/xtb_test/chunk_{chunk}.parquet", chunk=XTB_TEST_CHUNKS),
    output:
        dataset=plan.TEST_LABELS_DATASET,
        counts="results/datasets/xtb_test_counts.json",
    log:
        "logs/gather_xtb_test.log",
    benchmark:
        "logs/gather_xtb_test.benchmark.tsv",


use rule label_dft as label_dft_test with:
    input:
        frames="results/selection/xtb_test.parquet",
        gates=convergence_outputs("dft"),
    output:
        "results/labels/dft_test/chunk_{chunk}.parquet",
    log:
        "logs/label_dft_test/chunk_{chunk}.log",
    benchmark:
        "logs/label_dft_test/chunk_{chunk}.benchmark.tsv",


use rule gather_dft as gather_dft_test with:
    input:
        expand("results/labels/dft_test/chunk_{chunk}.parquet", chunk=DFT_TEST_CHUNKS),
    output:
        dataset=plan.TEST_DFT_DATASET,
        counts="results/datasets/dft_test_counts.json",
    log:
        "logs/gather_dft_test.log",
    benchmark:
        "logs/gather_dft_test.benchmark.tsv",
