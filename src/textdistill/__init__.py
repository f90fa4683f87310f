"""textdistill: knowledge distillation for NLP."""

__version__ = "0.1.0"
