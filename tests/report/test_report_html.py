"""The HTML report opened in headless Chromium with no network, metrics.csv, and the report, inspect and
compare commands."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import networkx as nx
import pytest
from typer.testing import CliRunner

from growsearch.cli import app
from growsearch.report.metrics import Metrics, metrics_table

from report_runs import chromium_binary, copy_of, finished_run

runner = CliRunner()

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--proxy-server=127.0.0.1:9",  # any network request would fail (and be reported below)
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]

# Injected into a copy of the page: records every image's decode state and every resource fetched.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt);
  const fetched = performance.getEntriesByType("resource").map((r) => r.name)
    .filter((name) => !name.startsWith("data:"));
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", JSON.stringify(broken));
  document.body.setAttribute("data-fetched", JSON.stringify(fetched));
  document.body.setAttribute("data-probe", "done");
});
</script>"""


class PageText(HTMLParser):
    """The visible text of a page, and the attributes of its <body>."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.body: dict[str, str | None] = {}
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = dict(attrs)
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.skip:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.chunks))


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run = copy_of("mntdp-d", tmp_path_factory, tmp_path_factory.mktemp("html") / "mntdp-d")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    return run, result.output


def test_report_opens_offline_in_chromium_with_every_figure_rendered(reported, tmp_path):
    run, _ = reported
    page = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page), "the page refers to a file or URL"
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = chromium(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = PageText()
    parsed.feed(dom.stdout)
    body = parsed.body
    assert body.get("data-probe") == "done", dom.stderr[-2000:]
    assert json.loads(body["data-broken"]) == [] and json.loads(body["data-fetched"]) == []
    failures = [line for line in dom.stderr.splitlines() if "Failed to load resource" in line]
    assert not failures, failures

    records = [json.loads((run / "tasks" / str(t) / "record.json").read_text()) for t in range(5)]
    figures = set(re.findall(r'<figure id="figure-([^"]+)"', page))
    expected = {"accuracy-matrix", "accuracy-time", "forgetting", "summary", "parameters", "trials"}
    expected |= {f"search-{t}" for t in range(5)} | {f"graph-{t}" for t in range(5)}
    expected |= {f"curves-{t}" for t in range(5)}
    assert figures == expected and int(body["data-images"]) == len(expected)

    text = parsed.text
    for record in records:  # every task's row: its chosen trial, decisions, parameters
        t = record["task"]
        row = re.search(rf"task {t} {', '.join(map(str, record['classes']))} {record['chosen_trial']} ", text)
        assert row, f"no row for task {t}"
        assert f"{record['parameters']:,}" in text and f"Task {t}" in text
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    fields = {
        k: tuple(v) if isinstance(v, list) else (float("nan") if v is None else v) for k, v in metrics.items()
    }
    for label, value in metrics_table(Metrics(**fields)):  # every metric with its value
        assert re.sub(r"\s+", " ", f"{label} {value}") in text, label
    for heading in (
        "Run",
        "Metrics",
        "Tasks",
        "Mechanism per task",
        "Figures",
        "Search per task",
        "Grown graph per task",
        "Config",
    ):
        assert heading in text
    assert re.search(r"optuna-dashboard (sqlite:///\S+study\.db|\S+study\.journal)", text)
    assert "reuse_depth" in text
    for record in records[1:]:  # the mechanism: the prior's scores and every candidate MNTDP-D trained
        assert "prior_scores" in text and "candidates" in text
        assert f"reuse_depth: {record['decisions']['reuse_depth']}" in text

    shot = tmp_path / "report.png"
    done = chromium(
        [f"--screenshot={shot}", "--window-size=1280,4000", (run / "report.html").as_uri()], tmp_path
    )
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (4000, 1280) and image[..., :3].std() > 0.05


def test_report_keeps_the_figures_and_writes_metrics_csv(reported):
    run, output = reported
    for name in ("accuracy_matrix.png", "parameter_growth.png", "trial_history.png"):
        assert (run / name).read_bytes().startswith(b"\x89PNG")
    assert "A_T" in output and "report.html" in output and "optuna-dashboard" in output
    rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    accuracy = [r for r in rows if r["metric"] == "accuracy"]
    matrix = json.loads((run / "metrics.json").read_text())["accuracy"]
    assert len(accuracy) == 25
    assert float(next(r for r in accuracy if r["after_task"] == "4" and r["on_task"] == "2")["value"]) == (
        pytest.approx(matrix[4][2])
    )
    assert {"parameters", "parameters_added", "average_accuracy", "bwt", "decision.reuse_depth"} <= {
        r["metric"] for r in rows
    }


def test_inspect_writes_every_format(tmp_path_factory, tmp_path):
    run = copy_of("packnet", tmp_path_factory, tmp_path / "packnet")
    for fmt in ("svg", "png", "html"):
        result = runner.invoke(app, ["inspect", str(run), "--task", "1", "--format", fmt])
        assert result.exit_code == 0, result.output
        assert (run / f"graph-task-1.{fmt}").stat().st_size > 5000
    html = (run / "graph-task-1.html").read_text()
    assert "<svg" not in html and "data:image/svg+xml;base64," in html and "shared/L0" in html
    for fmt in ("graphml", "json"):
        out = tmp_path / f"graph.{fmt}"
        result = runner.invoke(app, ["inspect", str(run), "--format", fmt, "--output", str(out)])
        assert result.exit_code == 0, result.output
    assert set(nx.read_graphml(tmp_path / "graph.graphml").nodes) == set(
        nx.node_link_graph(json.loads((tmp_path / "graph.json").read_text()), edges="edges").nodes
    )
    text = runner.invoke(app, ["inspect", str(run), "--task", "2"]).output
    assert "parameters per task" in text and "free / pruned weights" in text
    diff = runner.invoke(app, ["inspect", str(run), "--diff", "1", "2"])
    assert (
        diff.exit_code == 0
        and "what task 2 added over task 1" in diff.output
        and "+ head t2/head" in diff.output
    )
    png = runner.invoke(
        app, ["inspect", str(run), "--diff", "0", "4", "--format", "png", "--engine", "matplotlib"]
    )
    assert png.exit_code == 0 and (run / "graph-diff-0-4-matplotlib.png").read_bytes()[:4] == b"\x89PNG"
    drawn = runner.invoke(
        app, ["inspect", str(run), "--task", "1", "--format", "svg", "--engine", "matplotlib"]
    )
    assert drawn.exit_code == 0 and (run / "graph-task-1-matplotlib.svg").is_file()
    assert b"graphviz" in (run / "graph-task-1.svg").read_bytes().lower()  # Graphviz's picture is kept
    for args, message in [
        (["--diff", "3", "1"], "must come before"),
        (["--format", "jpeg"], "expected one of text, dot, svg"),
        (["--engine", "pencil"], "engine 'pencil'"),
        (["--task", "9"], "task 9 is not committed"),
    ]:
        bad = runner.invoke(app, ["inspect", str(run), *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_compare_runs_side_by_side(tmp_path_factory, tmp_path):
    runs = [finished_run(method, tmp_path_factory) for method in ("pnn", "packnet")]
    out = tmp_path / "cmp" / "compare.html"
    result = runner.invoke(app, ["compare", *map(str, runs), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "pnn" in result.output and "packnet" in result.output and "A_T" in result.output
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["method"] for r in rows] == ["pnn", "packnet"] and all(r["average_accuracy"] for r in rows)
    one = runner.invoke(app, ["compare", str(runs[0])])
    assert one.exit_code == 2 and "two or more run folders" in one.output
