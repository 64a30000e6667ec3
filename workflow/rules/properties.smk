# properties (properties.enabled): for each structure of properties.structures (a built
# structure's name, or a user CIF / extxyz file named by its stem), Berendsen NPT MD with
# the trained 4G potential over properties.temperatures_K -> volume and potential energy
# per atom against T (thermal expansion, dU/dT) and octahedral tilt distributions.
from hipqeq.properties import PLOTS as PROPERTY_PLOTS

PROPERTY_STRUCTURES = plan.property_structures(config)


def property_structure_file(wildcards):
    """A user file is its own input; a built structure comes from the structures file."""
    return PROPERTY_STRUCTURES[wildcards.structure] or "results/structures/structures.parquet"


def property_outputs():
    if not config["properties"]["enabled"]:
        return []
    return expand("results/properties/{structure}/properties.parquet", structure=PROPERTY_STRUCTURES)


rule properties:
    input:
        structures=property_structure_file,
        models=models_of("4g"),
    output:
        table="results/properties/{structure}/properties.parquet",
        summary="results/properties/{structure}/summary.json",
        plots=[report(f"results/properties/{{structure}}/{stem}.png", category="Properties",
                      subcategory="{structure}", caption="../report/properties.rst") for stem in PROPERTY_PLOTS],
    params:
        settings=config["properties"],
    log:
        "logs/properties/{structure}.log",
    benchmark:
        "logs/properties/{structure}.benchmark.tsv",
    conda:
        "../../envs/ml.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=480,
        gpu=1,
    shell:
        "hipqeq properties --config {CONFIG_FILE} --model {input.models} --structures {input.structures}"
        " --name {wildcards.structure} --output-dir results/properties/{wildcards.structure} > {log} 2>&1"
