"""What is trained and how: the network a config names (network), the targets and loss (loss), the
optimizer and learning-rate schedule (optim)."""
