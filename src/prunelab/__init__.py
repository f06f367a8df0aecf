"""PruneLab."""
