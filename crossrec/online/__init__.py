"""Online learning: stream events become samples (`samples`), rounds fine-tune the current
version (`finetune`), and a gate decides what is promoted (`learner`)."""
