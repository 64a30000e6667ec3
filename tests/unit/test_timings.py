"""Wall time per workflow stage, from the benchmark files Snakemake writes per job."""

from __future__ import annotations

import pytest

from hipqeq.cli import main
from hipqeq.errors import HipqeqError
from hipqeq.timings import duration, read_benchmarks, stage_rows

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def benchmark(path, seconds, rss="120.5", cpu="100.0"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


@pytest.fixture
def run(tmp_path):
    """A workflow directory: two label chunks, one training job, one job whose memory and
    CPU time Snakemake could not measure."""
    logs = tmp_path / "logs"
    benchmark(logs / "label_xtb" / "chunk_0.benchmark.tsv", 2700.0, rss="800", cpu="2690")
    benchmark(logs / "label_xtb" / "chunk_1.benchmark.tsv", 3300.0, rss="900", cpu="3290")
    benchmark(logs / "train_charges" / "0.benchmark.tsv", 90.0)
    benchmark(logs / "split.benchmark.tsv", 4.0, rss="NA", cpu="NA")
    (logs / "split.log").write_text("not a benchmark\n")
    return tmp_path


def test_jobs_are_read_with_their_stage(run):
    jobs = read_benchmarks(run).set_index("job")
    assert sorted(jobs.index) == ["label_xtb/chunk_0", "label_xtb/chunk_1", "split", "train_charges/0"]
    assert jobs.loc["label_xtb/chunk_1", "stage"] == "label_xtb"
    assert jobs.loc["split", "stage"] == "split"
    assert jobs.loc["label_xtb/chunk_1", "wall_s"] == 3300.0
    assert jobs.loc["split", "cpu_s"] != jobs.loc["split", "cpu_s"]  # NA reads as NaN


def test_stages_sum_their_jobs_most_work_first(run):
    rows = stage_rows(read_benchmarks(run))
    assert [r["stage"] for r in rows] == ["label_xtb", "train_charges", "split", "all stages"]
    label = rows[0]
    assert label["jobs"] == 2
    assert label["wall, summed"] == "1.7 h" and label["wall, longest job"] == "55.0 min"
    assert label["CPU, summed"] == "1.7 h" and label["max RSS (MB)"] == "900"
    split = rows[2]
    assert split["CPU, summed"] == "–" and split["max RSS (MB)"] == "–"
    assert rows[-1]["jobs"] == 4 and rows[-1]["wall, longest job"] == "55.0 min"


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (42.0, 450.0, 8280.0, float("nan"))] == ["42 s", "7.5 min", "2.3 h", "–"]


def test_a_run_without_benchmarks_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(HipqeqError, match="no \\*.benchmark.tsv files"):
        read_benchmarks(tmp_path)


@pytest.mark.parametrize("text", ["", "s\th:m:s\n"])
def test_an_unreadable_benchmark_is_an_error_naming_it(run, text):
    bad = run / "logs" / "label_xtb" / "chunk_2.benchmark.tsv"
    bad.write_text(text)
    with pytest.raises(HipqeqError, match="chunk_2.benchmark.tsv: not a Snakemake benchmark file"):
        read_benchmarks(run)


def test_cli_prints_the_stage_table(run, capsys):
    assert main(["timings", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| stage | jobs | wall, summed |")
    assert "| label_xtb | 2 | 1.7 h | 55.0 min | 1.7 h | 900 |" in out
    assert main(["timings", str(run / "nowhere")]) == 2
