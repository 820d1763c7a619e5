"""Benchmarks: each module is runnable as ``python -m bench.<name>``; ``python -m bench`` runs all.

Figures are measured, not asserted: the machine is shared and noisy, so every benchmark
reports medians and, where a baseline exists, a ratio measured side by side in the same run.
"""
