"""Ray Train entry points (distributed fine-tuning and domain adaptation); imports `crossrec`."""
