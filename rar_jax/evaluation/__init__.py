"""Evaluation: accuracy matrices and their summaries, and the nearest class
mean classifier over the replay buffer."""
