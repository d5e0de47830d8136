"""Analytic deep prior reproductions: ``python -m experiments.adp.<name>``."""
