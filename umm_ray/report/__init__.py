"""umm_ray.report: metrics logging, Gao et al. fits, plots and the comparison report (Markdown + HTML).

    from umm_ray.report import RMResult, BoNCurve, PPOCurve, build_report
    html = build_report([RMResult("dense", "dense", bon=..., ppo=...), ...], cfg, "runs/x/report")
"""

from umm_ray.report.build import build_report, load_results
from umm_ray.report.document import Section, Table, write_report
from umm_ray.report.fits import Fit, OveroptSummary, fit_curve, overopt_summary
from umm_ray.report.metrics import MetricsLogger, read_metrics
from umm_ray.report.records import BoNCurve, PPOCurve, RMResult, SeedRuns

__all__ = ["BoNCurve", "Fit", "MetricsLogger", "OveroptSummary", "PPOCurve", "RMResult", "Section", "SeedRuns", "Table",
           "build_report", "fit_curve", "load_results", "overopt_summary", "read_metrics", "write_report"]
