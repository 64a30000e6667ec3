# A SLURM run (profiles/slurm): start-up checks before the first submission (partitions
# exist, every job fits a node, status polling can see jobs finish, no orphaned jobs of
# an earlier run of this directory stay alive next to their resubmission; hipqeq.slurm),
# and the report at the end, as `make run` builds it locally.
import subprocess
import sys

from snakemake.logging import logger

from hipqeq import slurm

REPORT = "results/report.html"


def slurm_head_process():
    return workflow.is_main_process and workflow.executor_plugin.name == "slurm"


def largest_requests():
    """{rule: (threads, mem_mb)} of the largest job of each rule this run will submit."""
    requests = {}
    for job in workflow.dag.needrun_jobs():
        memory = job.resources.get("mem_mb", 0)
        request = (job.threads, memory if isinstance(memory, int) else 0)
        requests[job.rule.name] = max(requests.get(job.rule.name, (0, 0)), request)
    return requests


onstart:
    if slurm_head_process():
        try:
            slurm.check_before_submitting(workflow.executor_settings, largest_requests(), os.getcwd(),
                                          logger.warning)
        except slurm.ClusterError as exc:
            raise WorkflowError(f"SLURM start-up check failed: {exc}") from None


onsuccess:
    if slurm_head_process():
        if all(os.path.exists(path) for path in final_outputs()):
            subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", workflow.main_snakefile,
                            "--configfile", CONFIG_FILE, "--report", REPORT], check=True)
            logger.info(f"Report: {REPORT}")
        else:
            logger.info(f"No report: the run did not cover the whole study (build it with "
                        f"`snakemake --configfile {CONFIG_FILE} --report {REPORT}`)")
