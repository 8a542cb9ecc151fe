"""``python -m lvg`` == ``lvg``."""

from lvg.cli import main

if __name__ == "__main__":
    main()
