"""prune_tools: the offline pipeline (benchmark data, training, analyze, prune, heal, evaluate, sweep, export)."""
