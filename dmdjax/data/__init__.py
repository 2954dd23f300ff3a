"""Data: the paper's toys in R^4 (`toy`) and MNIST through TFDS (`mnist`)."""
