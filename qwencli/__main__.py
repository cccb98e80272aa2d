"""`python -m qwencli` runs the same app as the `qwen` console script."""

from qwencli.cli import main

if __name__ == "__main__":
    main()
