"""Wall time, CPU time and memory per workflow stage, from the benchmark file Snakemake
writes for every job: each rule's ``benchmark:`` is its log's path with
``.benchmark.tsv`` for ``.log`` (``logs/<rule>/<wildcards>.benchmark.tsv``, or
``logs/<rule>.benchmark.tsv`` for a rule with one job). Summed wall time is the work a
stage did, not how long it took: jobs of one stage run side by side."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from hipqeq.active.report import markdown_table
from hipqeq.errors import HipqeqError

BENCHMARK_SUFFIX = ".benchmark.tsv"
COLUMNS = ("stage", "jobs", "wall, summed", "wall, longest job", "CPU, summed", "max RSS (MB)")


def read_benchmarks(workdir: str | os.PathLike) -> pd.DataFrame:
    """One row per finished job under ``workdir/logs``: stage (the rule), job (the
    benchmark file's path under logs/, without the suffix), wall_s, cpu_s and max_rss_mb
    (NaN where Snakemake could not measure them)."""
    logs = Path(workdir) / "logs"
    rows = []
    for path in sorted(logs.rglob(f"*{BENCHMARK_SUFFIX}")):
        job = path.relative_to(logs).as_posix().removesuffix(BENCHMARK_SUFFIX)
        try:
            record = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise HipqeqError(f"{path}: not a Snakemake benchmark file ({exc})") from None
        if record.empty or "s" not in record:
            raise HipqeqError(f"{path}: not a Snakemake benchmark file (no 's' column or no row)")
        rows += [{"stage": job.split("/")[0], "job": job, "wall_s": float(line["s"]),
                  "cpu_s": float(line.get("cpu_time", float("nan"))),
                  "max_rss_mb": float(line.get("max_rss", float("nan")))}
                 for _, line in record.iterrows()]
    if not rows:
        raise HipqeqError(f"{logs}: no *{BENCHMARK_SUFFIX} files; they appear as the workflow's jobs finish")
    return pd.DataFrame(rows)


def duration(seconds: float) -> str:
    """``seconds`` as '42 s', '7.5 min' or '2.3 h'; '–' when not measured."""
    if pd.isna(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def stage_rows(jobs: pd.DataFrame) -> list[dict]:
    """Per stage, the most summed wall time first, then 'all stages': jobs, summed and
    longest wall time, summed CPU time and the largest resident memory."""
    groups = sorted(jobs.groupby("stage"), key=lambda item: -item[1].wall_s.sum())

    def row(name: str, group: pd.DataFrame) -> dict:
        return dict(zip(COLUMNS, (name, len(group), duration(group.wall_s.sum()), duration(group.wall_s.max()),
                                  duration(group.cpu_s.sum(min_count=1)),
                                  "–" if group.max_rss_mb.isna().all() else f"{group.max_rss_mb.max():.0f}")))

    return [row(stage, group) for stage, group in groups] + [row("all stages", jobs)]


def timings_markdown(workdir: str | os.PathLike) -> str:
    """The stage table of the workflow run in ``workdir``, as Markdown."""
    return markdown_table(stage_rows(read_benchmarks(workdir)), COLUMNS)
