"""`python -m growsearch.methods`: rewrite catalog.json from the method classes (after adding a method)."""

from growsearch.methods.registry import write_catalog

print(f"wrote {write_catalog()}")
