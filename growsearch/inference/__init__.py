"""Task inference: which task a test sample belongs to when the scenario does not say (class-IL)."""
