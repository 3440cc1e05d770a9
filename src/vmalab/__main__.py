"""``python -m vmalab``."""

from .cli import main

main()
