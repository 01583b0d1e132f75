"""``python -m dlfd`` runs the command-line interface."""

from dlfd.cli import main

if __name__ == "__main__":
    main()
