"""The trainer and its tools: train (the loop), cli (`physnets` / train_jax.py), data, checkpoint,
sharding, compare (fair comparisons), wave_ablations, diagnostics, plotting."""
