"""The report's learning curves: per task, a figure drawn from curves.csv, the committed trial's last run
bold (its training loss, training and validation accuracy per epoch), the other trials faint."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import re

import matplotlib.image

from growsearch.report import report_figures
from growsearch.report.html_report import write_report
from growsearch.runner import start_run

from tiny_runs import tiny_options, tiny_space

STALE = 9.0  # the training loss of an interrupted run of a trial, which a resume re-ran


def test_each_task_s_curves_are_the_committed_trial_s_last_run_from_curves_csv(tmp_path, monkeypatch):
    options = dataclasses.replace(tiny_options(), n_tasks=2, max_per_task=40)
    run = start_run(tiny_space("mntdp-d", training={"epochs": 3}), options, tmp_path / "run").path
    chosen = {
        t: json.loads((run / "tasks" / str(t) / "record.json").read_text())["chosen_trial"] for t in (0, 1)
    }
    with open(run / "curves.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    kept = {t: [r for r in body if r[:2] == [str(t), str(chosen[t])]] for t in (0, 1)}
    assert all(len(kept[t]) == 3 for t in (0, 1))
    first = body.index(kept[1][0])  # as a resume writes it: an earlier, interrupted run of the trial
    body[first:first] = [[*row[:3], str(STALE), *row[4:]] for row in kept[1][:2]]
    with open(run / "curves.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *body])

    drawn = {}

    def spy(task, committed, trials):
        drawn[task] = (committed, trials)
        return figure(task, committed, trials)

    figure = report_figures.curves_figure
    monkeypatch.setattr(report_figures, "curves_figure", spy)
    page = write_report(run).html.read_text()

    assert set(drawn) == {0, 1}
    for task, (committed, trials) in drawn.items():
        assert committed == chosen[task]
        epochs = [(e.epoch, e.train_loss, e.train_accuracy, e.val_accuracy) for e in trials[committed]]
        assert epochs == [(int(r[2]), *map(float, r[3:])) for r in kept[task]]
        assert all(e.train_loss != STALE for e in trials[committed])
        assert set(trials) == {int(r[1]) for r in body if r[0] == str(task)}  # the others, drawn faint
        caption = html.escape(f"task {task}'s learning curves (committed trial {committed})")
        found = re.search(
            rf'<figure id="figure-curves-{task}" class="figure">'
            rf'<img src="data:image/png;base64,([^"]+)" alt="{re.escape(caption)}">',
            page,
        )
        assert found, f"no curves figure for task {task}"
        image = matplotlib.image.imread(io.BytesIO(base64.b64decode(found.group(1))), format="png")
        assert image.shape[0] > 200 and image.std() > 0.05  # a drawn figure, not a blank one
