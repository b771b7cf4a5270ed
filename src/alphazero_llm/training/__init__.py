"""Training from search trees: losses, the run loop, checkpoints."""
