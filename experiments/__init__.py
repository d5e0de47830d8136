"""Paper reproductions: ``python -m experiments.<name>`` from the repository root."""
