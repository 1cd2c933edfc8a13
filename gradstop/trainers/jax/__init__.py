"""The JAX halves of the trainers (mirrors ``gradstop.trainers.torch``)."""
