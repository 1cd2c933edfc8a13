"""The PyTorch halves of the trainers (mirrors ``gradstop.trainers.jax``)."""
