"""Level-based reconcilers, one per kind."""
