"""``python -m lib.book``: see :mod:`lib.tools.book`."""

from .tools.book import main

if __name__ == "__main__":
    main()
