"""Model families: one adapter per kind of checkpoint, everything above them is family-agnostic."""
