"""Paper tables and figures, reproduced side by side: one command per table (docs/reproduce.md)."""
