"""``python -m lib.reproduce``: see :mod:`lib.tools.reproduce`."""

from .tools.reproduce import main

if __name__ == "__main__":
    main()
