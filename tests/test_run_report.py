"""`conveyor run report RUN -o run.html`, run as a user types it: one self-contained file (CSS and JS inlined, no
reference to a server or the network) holding every step, its log and the run's DAG and timeline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from dashboard_kit import make_project


def test_the_report_is_one_self_contained_file_with_every_step_and_log(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", None)
    failed = next(r for r in project.client().list_pipeline_runs() if r.status == "failed")
    out = tmp_path / "out" / "run.html"
    proc = subprocess.run([str(Path(sys.executable).with_name("conveyor")), "run", "report", failed.name, "-o",
                           str(out)], cwd=project.root, env=project.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote" in proc.stdout
    html = out.read_text()
    assert not re.search(r"https?://", html)
    assert not re.search(r'\b(src|href)="/', html) and "<link" not in html  # nothing from a server
    assert "<style>" in html and "<script>" in html  # inlined
    assert set(re.findall(r'<g class="node" data-step="([^"]+)"', html)) == {"load", "train", "evaluate"}
    assert set(re.findall(r'<details class="report-step" id="step-([^"]+)"', html)) == {"load", "train", "evaluate"}
    assert "training on [1, 2, 3]" in html and "evaluating" in html  # the logs
    assert 'class="bar' in html and 'id="totals"' in html
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # a hostile log line stays text


def test_an_unknown_run_is_an_error_that_says_so(tmp_path: Path, conveyor_cli) -> None:
    proc = conveyor_cli("run", "report", "no-such-run", "-o", str(tmp_path / "x.html"), check=False)
    assert proc.returncode == 1 and "no-such-run" in proc.stderr
    assert not (tmp_path / "x.html").exists()
