# train: the electronegativity HIP-NN + QEq charge model, the short-range HIP-NN on
# top of it (the 4G potential), and the short-range-only baseline; one GPU job each
# per committee member. With training.peer.enabled also the MACE peer model on the
# baseline's rows (members 0..training.peer.n_models-1).


rule train_charges:
    input:
        dataset=charge_dataset,
        splits="results/splits.json",
    output:
        report(directory("results/models/charges_{member}"), patterns=["{name,[^/]+}_curves.png"],
               category="Training curves", caption="../report/training.rst"),
    params:
        settings=HIPNN_TRAINING,
    log:
        "logs/train_charges/{member}.log",
    benchmark:
        "logs/train_charges/{member}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    shell:
        "hipqeq train charges --config {CONFIG_FILE} --dataset {input.dataset} --splits {input.splits}"
        " --member {wildcards.member} --output {output} > {log} 2>&1"


rule train_short_range:
    input:
        dataset=plan.training_dataset(config),
        splits="results/splits.json",
        charge_model="results/models/charges_{member}",
    output:
        report(directory("results/models/4g_{member}"), patterns=["{name,[^/]+}_curves.png"],
               category="Training curves", caption="../report/training.rst"),
    params:
        settings=HIPNN_TRAINING,
    log:
        "logs/train_short_range/{member}.log",
    benchmark:
        "logs/train_short_range/{member}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=1,
    shell:
        "hipqeq train short-range --config {CONFIG_FILE} --dataset {input.dataset}"
        " --splits {input.splits} --charge-model {input.charge_model} --member {wildcards.member}"
        " --output {output} > {log} 2>&1"


rule train_baseline:
    input:
        dataset=plan.training_dataset(config),
        splits="results/splits.json",
    output:
        report(directory("results/models/baseline_{member}"), patterns=["{name,[^/]+}_curves.png"],
               category="Training curves", caption="../report/training.rst"),
    params:
        settings=HIPNN_TRAINING,
    log:
        "logs/train_baseline/{member}.log",
    benchmark:
        "logs/train_baseline/{member}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=1,
    shell:
        "hipqeq train baseline --config {CONFIG_FILE} --dataset {input.dataset}"
        " --splits {input.splits} --member {wildcards.member} --output {output} > {log} 2>&1"


rule train_peer:
    input:
        dataset=plan.training_dataset(config),
        splits="results/splits.json",
    output:
        report(directory("results/models/mace_{member}"), patterns=["{name,[^/]+}_curves.png"],
               category="Training curves", caption="../report/training.rst"),
    params:
        settings=config["training"],
    log:
        "logs/train_peer/{member}.log",
    benchmark:
        "logs/train_peer/{member}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=1,
    shell:
        "hipqeq train mace --config {CONFIG_FILE} --dataset {input.dataset}"
        " --splits {input.splits} --member {wildcards.member} --output {output} > {log} 2>&1"
