"""Reports from results directories: Table 1's layout with the paper's numbers beside ours, the chosen configs,
trial counts, and figures, as Markdown (+ PNGs), one self-contained HTML file, or rich tables.

    pdd report results/<sweep>                                 # reports/<sweep>/report.md and figures/*.png
    pdd report results/<sweep> --format html -o reports/<name> # reports/<name>/report.html
    pdd report results/a results/b --format term               # b beside a, with deltas

Data flows one way: outcomes (read rows, choose configs) -> tables and figures -> model.Report -> render.
"""

from pdd.report.build import build_report
from pdd.report.render import render_terminal, write_report

__all__ = ["build_report", "render_terminal", "write_report"]
