"""`bot bench`: the serving figures of the issue, each measured beside its baseline in one run.

Every figure is a ratio of two measurements taken side by side on the same machine,
so it holds on other hardware too; BENCHMARKS.md records them with their targets.
"""
