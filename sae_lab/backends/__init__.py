"""Swappable backends: text generation (`text`), image generation (`image`) and perception (`perception`)."""
