"""One task of one or more GUIM-Bench reports as a compact Markdown table: a row per method, a
column per metric (mean ± half-width of the 95 % t-interval), the fit seconds per seed last.

    python bench/task_table.py --task next_item WS/reports/bench-A WS/reports/bench-B=tuned

A report is a bench-* folder or its bench.json (a `guim bench --combine` report too);
``REPORT=LABEL`` adds `` (LABEL)`` to the names of that report's methods, so that one method run
in two reports under other settings (say item2vec with the defaults and with settings chosen on
the data set's valid split) gets two rows. The best mean of each column is in bold and ≈ marks a
row whose interval overlaps the best one's, as in the report's own table
(guim_features.downstream.report.marked_cells).
"""
from __future__ import annotations

import argparse


def rows_of(reports: list, task: str) -> list:
    """[(name, {metric: result}, fit seconds)] for every method with results on ``task``."""
    from guim_features.downstream.report import read_report

    out = []
    for spec in reports:
        path, _, label = spec.partition("=")
        report = read_report(path)
        for m in report["methods"]:
            res = report["results"].get(m, {}).get(task)
            if res:
                name = f"{m} ({label})" if label else m
                out.append((name, res, report.get("fit_seconds", {}).get(m, 0.0)))
    return out


def table(rows: list, metrics: list) -> str:
    from guim_features.downstream.report import marked_cells

    def cell(r):
        return f"{r['mean']:.4f}" if len(r["values"]) < 2 else f"{r['mean']:.4f} ± {r['ci95']:.4f}"

    marked = {k: marked_cells({name: res[k] for name, res, _ in rows if k in res}, cell) for k in metrics}
    lines = ["| method | " + " | ".join(metrics) + " | fit s per seed |",
             "| --- |" + " ---: |" * (len(metrics) + 1)]
    for name, _, fit in rows:
        lines.append(f"| {name} | " + " | ".join(marked[k].get(name, "–") for k in metrics) + f" | {fit:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", metavar="REPORT[=LABEL]")
    ap.add_argument("--task", default="next_item")
    ap.add_argument("--metrics", default="recall@10,recall@20,ndcg@10,ndcg@20",
                    help="comma-separated metrics of the task, in column order")
    args = ap.parse_args()
    rows = rows_of(args.reports, args.task)
    if not rows:
        raise SystemExit(f"no method of {', '.join(args.reports)} has results on task {args.task!r}")
    print(table(rows, args.metrics.split(",")))


if __name__ == "__main__":
    main()
