"""umm_ray.data: preference pairs and prompts from real datasets and local files, validated row by row."""

from umm_ray.data.jsonl import DataError, iter_records, read_jsonl, write_jsonl
from umm_ray.data.preferences import load_preferences, load_preferences_with_report
from umm_ray.data.prompts import load_prompts, load_prompts_with_report
from umm_ray.data.splits import split_pairs
from umm_ray.data.validate import LoadReport

__all__ = ["DataError", "LoadReport", "iter_records", "load_preferences", "load_preferences_with_report",
           "load_prompts", "load_prompts_with_report", "read_jsonl", "split_pairs", "write_jsonl"]
