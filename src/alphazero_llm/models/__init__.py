"""Student, teacher and terminal-checker models."""
